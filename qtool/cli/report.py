"""`qtool report`: one self-contained HTML page showing what quantization will do."""

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


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("calibration", type=click.Path(dir_okay=False))
@click.option("--model", type=click.Path(dir_okay=False), default=None,
              help="The calibrated FP32 model or its Q/DQ INT8 model: adds per-layer weight scales.")
@click.option("--sensitivity", type=click.Path(dir_okay=False), default=None,
              help="JSON written by `qtool sensitivity -o`: adds the layer ranking.")
@click.option("--compare", type=click.Path(dir_okay=False), default=None,
              help="JSON written by `qtool compare -o`: adds per-output metrics and gates.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True,
              help="The HTML file to write.")
@click.option("--png-dir", type=click.Path(file_okay=False), default=None,
              help="Also write every figure as a PNG file into this folder.")
@config_option
@json_option
@verbosity_options
@click.pass_context
def report(ctx, **params):
    """Write an HTML report of the calibration file CALIBRATION.

    Per activation tensor: its |x| histogram with the chosen amax and the amax the max,
    percentile, mse and entropy methods would pick, each with the share of values it clips
    and the estimated INT8 SQNR. With --model, the spread of weight scales per layer and
    degenerate channels; with --sensitivity and --compare, their results. Figures are embedded,
    so the page opens without network access. Needs matplotlib (pip install 'qtool[report]').
    """
    from qtool.io.outputs import guard_outputs
    from qtool.report.api import write_report
    from qtool.report.figures import require_matplotlib

    params, _ = apply_config(ctx, params, params["config_path"], "report")
    setup_logging(params["verbose"], params["quiet"])
    # the library guards the page against the files it reads; the config is the command's own
    guard_outputs([params["output"]], inputs=[params["config_path"]])
    require_matplotlib()
    result = write_report(params["calibration"], params["output"], model=params["model"],
                          sensitivity=params["sensitivity"], compare=params["compare"],
                          png_dir=params["png_dir"])
    lines = [(f"wrote {result.output} ({result.size_bytes / 1024:.0f} KiB, "
              f"{_count(result.figures, 'figure')}, {_count(result.tensors, 'tensor')}, "
              f"{_count(result.layers, 'weighted layer')}) in {result.seconds:.1f}s")]
    if result.png_files:
        lines.append(f"wrote {len(result.png_files)} PNG files to {params['png_dir']}")
    if result.attention:
        shown = ", ".join(result.attention[:5])
        more = f" and {len(result.attention) - 5} more" if len(result.attention) > 5 else ""
        lines.append(f"{len(result.attention)} tensors clip much or have a low estimated SQNR: "
                     f"{shown}{more}")
    emit(result.to_dict(), params["as_json"], "\n".join(lines))


def _count(number: int, word: str) -> str:
    return f"{number} {word}{'' if number == 1 else 's'}"
