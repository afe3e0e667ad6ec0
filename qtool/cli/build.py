"""`qtool build`: a TensorRT engine from an ONNX model, then its layers and their precisions."""

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

SHAPES_HELP = (
    "Optimization-profile range of an input, NAME:MINxOPTxMAX with dims joined by ',' "
    "(e.g. input:1,3,224,224x8,3,224,224x32,3,224,224), or NAME:DIMS for a fixed shape. "
    "Repeat for each dynamic input; the k-th --shapes of an input belongs to profile k. "
    "Without it, dynamic dimensions take the sizes seen in calibration (--calib, or MODEL's "
    "calibration file beside it), else the batch axis is 1."
)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Engine file (default: MODEL stem + .engine beside the model when that folder is "
                   "yours, else in the current folder).")
@click.option("--int8", is_flag=True,
              help="INT8 engine from the model's Q/DQ nodes (run `qtool quantize` first).")
@click.option("--fp16", is_flag=True,
              help="FP16 for the non-quantized layers (TensorRT 11 / strongly typed: the model is "
                   "converted to FP16 on a temporary copy).")
@click.option("--strongly-typed", is_flag=True,
              help="TensorRT 10: build a strongly typed network (always so on TensorRT 11).")
@click.option("--shapes", multiple=True, metavar="NAME:MINxOPTxMAX", help=SHAPES_HELP)
@click.option("--calib", type=click.Path(dir_okay=False), default=None,
              help="Calibration file whose recorded input sizes set the dynamic dimensions "
                   "(default: MODEL.calib.json, or the FP32 model's for MODEL.int8.onnx).")
@click.option("--batch", type=int, default=None, metavar="N",
              help="Batch axis of every dynamic input from 1 to N (OPT = MAX = N), without --shapes.")
@click.option("--workspace", type=int, default=None, metavar="MIB",
              help="Workspace memory pool limit in MiB.")
@click.option("--timing-cache", type=click.Path(dir_okay=False), default=None,
              help="Tactic timing cache: read if it exists, updated after the build.")
@click.option("--builder-optimization-level", type=click.IntRange(0, 5), default=None,
              help="TensorRT builder optimization level (0-5; TensorRT's default is 3).")
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
    from qtool.backends.tensorrt.build import BuildOptions, build_engine
    from qtool.backends.tensorrt.inspect import format_layer_table
    from qtool.backends.tensorrt.logger import level_for
    from qtool.io.outputs import guard_outputs

    params, _ = apply_config(ctx, params, params["config_path"], "build")
    setup_logging(params["verbose"], params["quiet"])
    # the library guards the engine against the model; the config is the command's own input
    guard_outputs([params["output"], params["timing_cache"]], inputs=[params["config_path"]])
    options = BuildOptions(
        int8=params["int8"], fp16=params["fp16"], strongly_typed=params["strongly_typed"],
        shapes=list(params["shapes"]), workspace_mib=params["workspace"],
        timing_cache=params["timing_cache"],
        builder_optimization_level=params["builder_optimization_level"],
        log_level=level_for(params["verbose"], params["quiet"]),
        calib=params["calib"], batch=params["batch"],
    )

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
