"""`qtool check`: lint a Q/DQ model against what TensorRT accepts and what makes it fast."""

from __future__ import annotations

import click

from qtool.cli.common import (
    apply_config,
    config_option,
    emit,
    json_option,
    setup_logging,
    verbosity_options,
)
from qtool.cli.options import click_options
from qtool.quantize.check.options import CHECK


def _codes_epilog() -> str:
    from qtool.quantize.check import CODES

    width = max(len(code) for code in CODES)
    lines = [f"  {code:<{width}}  {severity:<7}  {text}" for code, (severity, text) in CODES.items()]
    return "\b\nChecks (code, severity, meaning):\n" + "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120},
               epilog=_codes_epilog())
@click.argument("model", type=click.Path(dir_okay=False))
@click_options(CHECK)
@config_option
@json_option
@verbosity_options
@click.pass_context
def check(ctx, **params):
    """Lint the Q/DQ model MODEL against TensorRT's rules.

    Prints every finding with its severity, code and node, then a summary line. Exit status 1
    when there are errors (or, with --strict, warnings); 0 otherwise.
    """
    from qtool.io.model import load_model, model_sha256
    from qtool.quantize.check import check_model
    from qtool.versions import tool_versions

    params, _ = apply_config(ctx, params, params["config_path"], "check")
    setup_logging(params["verbose"], params["quiet"])
    model_path, strict = params["model"], params["strict"]
    report = check_model(load_model(model_path), ignore=params["ignore"])
    result = {"model": str(model_path), "model_sha256": model_sha256(model_path),
              **report.to_dict(strict), "tools": tool_versions()}
    lines = [finding.format() for finding in report.findings] + [report.summary(strict)]
    emit(result, params["as_json"], "\n".join(lines))
    if not report.passed(strict):
        ctx.exit(1)
