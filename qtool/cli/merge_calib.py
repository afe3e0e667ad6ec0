"""`qtool merge-calib`: combine the calibration files of shards into one, exactly."""

from __future__ import annotations

from pathlib import Path

import click

from qtool.cli.common import emit, json_option, setup_logging, verbosity_options
from qtool.thresholds import METHODS


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("calibrations", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True,
              help="Merged calibration file.")
@click.option("--method", type=click.Choice(list(METHODS)), default=None,
              help="Threshold method (default: the shards' method).")
@click.option("--percentile", type=float, default=None, help="Percentile for --method percentile.")
@json_option
@verbosity_options
def merge_calib(calibrations, output, method, percentile, as_json, verbose, quiet):
    """Merge the histograms of CALIBRATIONS (shards made with --shard K/N) and pick thresholds
    again: the result equals one calibration run over all the data."""
    from qtool import limits
    from qtool.calib.calibfile import histogram_path_for, read_calibration, write_calibration
    from qtool.calib.calibfile.paths import calibration_files
    from qtool.calib.merge import merge
    from qtool.io.outputs import guard_outputs

    setup_logging(verbose, quiet)
    limits.configure(None)
    guard_outputs([output, histogram_path_for(output)],
                  calibrations=calibration_files(*calibrations))
    shards = [read_calibration(path) for path in calibrations]
    params = {"percentile": percentile} if percentile is not None else None
    result = merge(shards, method, params)
    write_calibration(result.calibration, Path(output), result.histograms, result.means)
    calibration = result.calibration
    emit({"output": output, "tensors": len(calibration.tensors), "samples": calibration.num_samples,
          "method": calibration.method, "inputs": list(calibrations)}, as_json,
         f"merged {len(calibrations)} files: {len(calibration.tensors)} tensors, "
         f"{calibration.num_samples} samples, method {calibration.method}\nwrote {output}")
