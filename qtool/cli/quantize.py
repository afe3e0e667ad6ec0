"""`qtool quantize`: insert Q/DQ nodes for TensorRT from a calibration file."""

from __future__ import annotations

from pathlib import Path

import click

from qtool.cli.common import (
    apply_config,
    config_option,
    emit,
    json_option,
    log,
    setup_logging,
    verbosity_options,
)
from qtool.cli.options import click_options
from qtool.errors import QtoolError, UsageError
from qtool.quantize.options import DEFAULT_OP_TYPES, QUANTIZE, quantize_options, split_op_types


def default_output(model: str) -> Path:
    from qtool.io.outputs import beside

    return beside(model, Path(model).stem + ".int8.onnx")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--calib", "calib", type=click.Path(dir_okay=False), default=None,
              help="Calibration file written by `qtool calibrate` (required).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Quantized model (default: MODEL.int8.onnx beside the model when that folder is "
                   "yours, else in the current folder).")
@click_options(QUANTIZE)
@config_option
@json_option
@verbosity_options
@click.pass_context
def quantize(ctx, **params):
    """Quantize MODEL to INT8 with Q/DQ nodes placed for TensorRT.

    Weighted ops get per-tensor activation and per-channel weight scales; residual Adds,
    average pooling and Concat get the Q/DQ TensorRT needs to fuse them. Biases are corrected
    for the expected shift of weight rounding when the calibration has per-channel means.
    """
    from qtool.calib.calibfile import check_model_match, read_calibration
    from qtool.calib.calibfile.paths import calibration_files
    from qtool.io.model import load_model, model_sha256, save_model
    from qtool.io.outputs import guard_outputs
    from qtool.quantize.api import quantize_model, record_provenance, refuse_quantized

    params, _ = apply_config(ctx, params, params["config_path"], "quantize")
    setup_logging(params["verbose"], params["quiet"])
    model_path = params["model"]
    if not params["calib"]:
        raise UsageError("missing --calib CALIB.json (write one with `qtool calibrate`)")
    output = Path(params["output"] or default_output(model_path))
    guard_outputs([output, f"{output}.data"], models=[model_path],
                  calibrations=calibration_files(params["calib"]),
                  inputs=[params["exclude_file"], params["config_path"]])

    model = load_model(model_path)
    refuse_quantized(model)  # before the calibration check: the more useful message
    calibration = read_calibration(params["calib"])
    sha256 = model_sha256(model_path)
    check_model_match(calibration, sha256)

    # an empty --op-types (or op_types = []) means the default op types
    params["op_types"] = split_op_types(params["op_types"]) or DEFAULT_OP_TYPES
    options = quantize_options(params)
    channel_means = None
    if options.bias_correction:
        try:
            channel_means = calibration.load_channel_means()
        except QtoolError as exc:
            raise QtoolError(f"{exc} (or quantize with --no-bias-correction)") from None
    _warn_poor_thresholds(calibration)
    quantized, summary = quantize_model(model, calibration.amax, options, in_place=True,
                                        channel_means=channel_means)
    record_provenance(quantized, source_sha256=sha256, calibration_method=calibration.method,
                      options=options.to_dict())
    for pattern in summary.unmatched_excludes:
        log.warning("exclude pattern %r matches no node", pattern)
    if summary.total_quantized == 0:
        log.warning("no node was quantized; see the skipped nodes (-v) for why")
    save_model(quantized, output)

    result = {"output": str(output), "model": str(model_path), "calibration": str(params["calib"]),
              **summary.to_dict()}
    emit(result, params["as_json"],
         summary.render_text(verbose=params["verbose"] > 0) + f"\nwrote {output}")


def _warn_poor_thresholds(calibration) -> None:
    """The calibrate step's warning about costly thresholds, again where they are used (the
    histograms are small: bins per tensor); a calibration without readable histograms has
    nothing to check."""
    from qtool.calib.thresholding import warn_poor_thresholds

    stored = calibration.histogram_path()
    if stored is None or not stored.is_file():
        return
    try:
        histograms = calibration.load_histograms()
    except QtoolError:
        return  # bias correction, when on, has already said what is wrong with the file
    warn_poor_thresholds(calibration, histograms)
