"""`qtool build`: a TensorRT engine from an ONNX model, then its layers and their precisions."""

from __future__ import annotations

import click

from qtool.backends.tensorrt.build_options import BUILD, build_options
from qtool.cli.common import (
    apply_config,
    config_option,
    emit,
    json_option,
    setup_logging,
    verbosity_options,
)
from qtool.cli.options import click_options


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Engine file (default: MODEL stem + .engine beside the model when that folder is "
                   "yours, else in the current folder).")
@click_options(BUILD)
@config_option
@json_option
@verbosity_options
@click.pass_context
def build(ctx, **params):
    """Build a TensorRT engine from MODEL (ONNX) and show each layer's precision.

    Needs TensorRT 10 or 11 and an NVIDIA GPU. Writes the engine atomically and a build record
    ENGINE.json beside it (model sha256, TensorRT version, options, layers). -v/-vv show
    TensorRT's info/verbose log on stderr.
    """
    from qtool.backends.tensorrt.build import build_engine
    from qtool.backends.tensorrt.inspect import format_layer_table
    from qtool.backends.tensorrt.logger import level_for
    from qtool.io.outputs import guard_outputs

    params, _ = apply_config(ctx, params, params["config_path"], "build")
    setup_logging(params["verbose"], params["quiet"])
    # the library guards the engine against the model; the config is the command's own input
    guard_outputs([params["output"], params["timing_cache"]], inputs=[params["config_path"]])
    options = build_options(params, log_level=level_for(params["verbose"], params["quiet"]))

    def notify(text: str) -> None:
        if not params["quiet"]:
            click.echo(f"note: {text}", err=True)

    result = build_engine(params["model"], params["output"], options, notify=notify)
    summary = result.summary
    size_mib = result.engine_bytes / (1 << 20)
    lines = []
    table = format_layer_table(summary)
    if table:
        lines.append(table)
    lines.append(summary.summary_line())
    lines.append(
        f"wrote {result.engine_path} ({size_mib:.1f} MiB; TensorRT {result.tensorrt_version}, "
        f"{result.typing}; built in {result.build_seconds:.1f} s)"
    )
    emit(result.to_dict(), params["as_json"], "\n".join(lines))
