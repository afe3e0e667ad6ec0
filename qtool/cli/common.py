"""Shared pieces of the thin CLI commands: common options, config defaults, output."""

from __future__ import annotations

import json
import logging
import os
import sys

import click

from qtool.backends.onnxruntime.providers import AUTO as AUTO_PROVIDER
from qtool.backends.onnxruntime.providers import CHOICES as PROVIDER_CHOICES
from qtool.cli.options import click_options
from qtool.config import load_config, section
from qtool.errors import UsageError
from qtool.options import data_options as declared_data_options

log = logging.getLogger("qtool")


def verbosity_options(func):
    func = click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr; no progress bar.")(func)
    func = click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")(func)
    return func


def json_option(func):
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")(func)


def config_option(func):
    return click.option(
        "--config", "config_path", type=click.Path(dir_okay=False), default=None,
        help="TOML config; its values are defaults that flags override.",
    )(func)


def data_options(func):
    """--data, --data-loader-script, --num-samples, --batch-size: every command that reads data."""
    return click_options(declared_data_options())(func)


def provider_option(func):
    """--provider: where onnxruntime runs (onnxruntime-gpu offers cuda and tensorrt)."""
    return click.option(
        "--provider", type=click.Choice(PROVIDER_CHOICES), default=AUTO_PROVIDER, show_default=True,
        help="onnxruntime execution provider: cuda or tensorrt need onnxruntime-gpu (an error "
             "when missing); auto takes cuda when available, else the CPU.")(func)


def require_data(params: dict) -> None:
    if params["data"] is None and params["loader_script"] is None:
        raise UsageError("missing --data PATH (or --data-loader-script FILE)")


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def apply_config(ctx: click.Context, params: dict, config_path, table: str) -> tuple[dict, dict]:
    """Fill every option the user did not pass on the command line from `[table]` of the config.

    Returns (params, whole config). Unknown keys in the table are a usage error, so a typo in a
    config never silently does nothing. Relative file paths in the config name files beside the
    config file (as `qtool pipeline` reads them), whatever the working directory.
    """
    from qtool import limits

    config = load_config(config_path)
    limits.configure(config.get("limits"))
    values = section(config, table)
    known = {p.name: p for p in ctx.command.params}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in known or name in ("config_path",):
            raise UsageError(f"unknown key {key!r} in [{table}] of {config_path}")
        source = ctx.get_parameter_source(name)
        if source in (click.core.ParameterSource.DEFAULT, None):
            param = known[name]
            if param.multiple and not isinstance(value, list):
                value = [value]
            try:
                params[name] = param.type_cast_value(ctx, value)
            except click.BadParameter as exc:
                raise UsageError(f"[{table}] {key} in {config_path}: {exc.message}") from None
            if isinstance(param.type, click.Path):
                params[name] = _beside_config(config_path, params[name])
    return params, config


def _beside_config(config_path, value):
    if isinstance(value, (list, tuple)):
        return type(value)(_beside_config(config_path, item) for item in value)
    if isinstance(value, str) and value and not os.path.isabs(os.path.expanduser(value)):
        return os.path.join(os.path.dirname(os.path.abspath(config_path)), value)
    return value


def emit(result: dict, as_json: bool, text: str) -> None:
    """Results go to stdout: JSON for machines, text for people."""
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
    else:
        click.echo(text)
