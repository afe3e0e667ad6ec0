"""`qtool calibrate`: collect histograms of the observed activations and pick thresholds."""

from __future__ import annotations

from pathlib import Path

import click

from qtool.calib.options import CALIBRATE
from qtool.cli.common import (
    apply_config,
    config_option,
    emit,
    json_option,
    log,
    provider_option,
    require_data,
    setup_logging,
    verbosity_options,
)
from qtool.cli.options import click_options
from qtool.cli.progress import SampleProgress
from qtool.config import section
from qtool.errors import QtoolError, UsageError


def default_output(model: str) -> Path:
    from qtool.io.outputs import beside

    return beside(model, Path(model).stem + ".calib.json")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path(dir_okay=False))
@click_options(CALIBRATE)
@provider_option
@click.option("--trt-cache", type=click.Path(dir_okay=False), default=None,
              help="Also write a TensorRT (implicit INT8) calibration cache.")
@click.option("--trt-version", default=None,
              help="TensorRT version the cache header names; it must be the TensorRT that reads "
                   "the cache (default: the installed TensorRT 10, else 10.3.0).")
@click.option("--from-trt-cache", type=click.Path(dir_okay=False), default=None,
              help="Make the calibration file from an existing TensorRT cache (no data needed).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Calibration file (default: MODEL.calib.json beside the model when that folder "
                   "is yours, else in the current folder).")
@click.option("--reuse", is_flag=True,
              help="Keep the output calibration when it was made (with --reuse) from the same "
                   "model, data and options; when only the threshold options changed, pick "
                   "thresholds again from its histograms.")
@config_option
@json_option
@verbosity_options
@click.pass_context
def calibrate(ctx, **params):
    """Calibrate MODEL on data: histograms of |x| for every tensor to quantize, then thresholds.

    Writes MODEL.calib.json (amax per tensor) and MODEL.calib.npz (histograms).
    """
    from qtool.calib.calibfile import histogram_path_for
    from qtool.calib.options import calibrate_options
    from qtool.io.outputs import guard_outputs

    params, config = apply_config(ctx, params, params["config_path"], "calibrate")
    setup_logging(params["verbose"], params["quiet"])
    model = params["model"]
    output = Path(params["output"] or default_output(model))
    if params["trt_cache"] and params["trt_version"]:
        from qtool.calib.trtcache import version_number

        try:
            version_number(params["trt_version"])
        except QtoolError as exc:
            raise UsageError(f"--trt-version: {exc}") from None
    guard_outputs([output, histogram_path_for(output), params["trt_cache"]], models=[model],
                  inputs=[params["data"], params["loader_script"], params["from_trt_cache"],
                          params["config_path"]])
    if params["from_trt_cache"]:
        return _from_trt_cache(model, params, output)

    options = calibrate_options(params, preprocess=section(config, "preprocess"),
                                inputs=section(config, "inputs"), provider=params["provider"])
    require_data(params)
    _log_counting_path()
    if params["reuse"]:
        _calibrate_or_reuse(model, params, options, output)
    else:
        _finish(params, output, _collect(model, params, options))


def _collect(model: str, params: dict, options, sha256: str | None = None):
    """Calibrate: the histograms and thresholds (nothing written yet); `sha256`: the model's,
    when already computed."""
    from qtool.calib.api import calibrate as run_calibration

    progress = SampleProgress("calibrating", enabled=not params["quiet"])
    try:
        return run_calibration(model, params["data"], options,
                               on_batch=progress.advance, on_start=progress.begin,
                               sha256=sha256)
    finally:
        progress.finish()


def _calibrate_or_reuse(model: str, params: dict, options, output: Path) -> None:
    """--reuse: the output calibration as it is when its keys match (qtool.calib.reuse), its
    histograms thresholded again when only the threshold options changed, else calibrate; the
    file written records the keys for the next run."""
    from qtool.calib.reuse import calibration_keys, find_reuse
    from qtool.io.model import model_sha256

    sha256 = model_sha256(model)
    keys = calibration_keys(model, sha256, params["data"], options)
    reuse = find_reuse(output, sha256, keys, options)
    if reuse.calibration is not None:
        calibration = reuse.calibration
        _write_trt_cache(params, calibration)
        emit({"output": str(output), "reused": True, "cache_key": keys.key,
              "method": calibration.method, "tensors": len(calibration.tensors),
              "samples": calibration.num_samples, "trt_cache": params["trt_cache"]},
             params["as_json"],
             f"reused {output}: model, data and options unchanged (cache key {keys.key[:12]})")
        return
    if reuse.rethresholded is not None:
        keys.record(reuse.rethresholded.calibration)
        _finish(params, output, reuse.rethresholded,
                done="picked thresholds again (histograms reused, no inference) for")
        return
    result = _collect(model, params, options, sha256)
    keys.record(result.calibration)
    _finish(params, output, result)


def _write_trt_cache(params: dict, calibration) -> None:
    """--trt-cache: the thresholds as a TensorRT calibration cache."""
    if not params["trt_cache"]:
        return
    from qtool.io.atomic import write_text

    write_text(params["trt_cache"], _format_trt_cache(params, calibration))


def _format_trt_cache(params: dict, calibration) -> str:
    from qtool.calib.trtcache import check_name, format_cache

    for name in calibration.amax:  # before the header's version is chosen (and warned about)
        check_name(name, "TensorRT cache")
    return format_cache(calibration.amax, _cache_version(params["trt_version"]))


def _finish(params: dict, output: Path, result, done: str = "calibrated") -> None:
    """Warnings, then the calibration file (and the TensorRT cache), then the summary."""
    from qtool.calib.calibfile import write_calibration
    from qtool.calib.thresholding import warn_poor_thresholds

    calibration = result.calibration
    _warn_non_finite(calibration)
    warn_poor_thresholds(calibration, result.histograms)
    cache_text = None
    if params["trt_cache"]:  # formatted first: a name the cache cannot hold fails before any write
        cache_text = _format_trt_cache(params, calibration)
    write_calibration(calibration, output, result.histograms, result.means)
    if cache_text is not None:
        from qtool.io.atomic import write_text

        write_text(params["trt_cache"], cache_text)
    summary = {
        "output": str(output), "histograms": calibration.histogram_file,
        "method": calibration.method, "params": calibration.params,
        "tensors": len(calibration.tensors), "samples": calibration.num_samples,
        "batches": calibration.num_batches, "seconds": round(result.seconds, 3),
        "trt_cache": params["trt_cache"], "auto": calibration.auto,
    }
    emit(summary, params["as_json"],
         f"{done} {summary['tensors']} tensors on {summary['samples']} samples "
         f"({summary['batches']} batches) in {result.seconds:.2f}s, method {calibration.method}"
         f"{_auto_text(calibration.auto)}\n"
         f"wrote {output}" + (f" and {params['trt_cache']}" if params["trt_cache"] else ""))


def _auto_text(record: dict | None) -> str:
    """What method auto chose, in a few words (empty for other methods)."""
    if not record:
        return ""
    scores = record.get("model_scores", {})
    if not scores:
        return f" ({record['model_method']} for every tensor: {record.get('reason', '')})"
    listed = ", ".join(f"{method} {score['sqnr_db']:.1f} dB" for method, score in scores.items())
    refined = len(record.get("refined", []))
    return (f" ({record['model_method']} won; output SQNR on {record['slice_samples']} held-aside "
            f"samples: {listed}; {refined} tensor{'' if refined == 1 else 's'} refined)")


def _cache_version(given: str | None) -> str:
    """The version the cache header names: --trt-version, the installed TensorRT (10 or older:
    TensorRT 11 reads no calibration caches), or the default, said in one warning."""
    from qtool.backends.availability import installed_tensorrt_version
    from qtool.calib.trtcache import DEFAULT_TRT_VERSION, version_number

    if given:
        return given
    installed = installed_tensorrt_version()
    if installed is not None and version_number(installed) < version_number("11.0.0"):
        return installed
    log.warning("the TensorRT cache header names TensorRT %s (%s); TensorRT refuses a cache made "
                "for another version, so give --trt-version with the version that will read it",
                DEFAULT_TRT_VERSION, "no TensorRT 10 is installed here" if installed is None
                else f"TensorRT {installed} reads no calibration caches")
    return DEFAULT_TRT_VERSION


def _log_counting_path() -> None:
    from qtool.calib.binning import NOT_BUILT, compiled_kernel

    if compiled_kernel() is None:
        log.info("histograms are counted with numpy: %s", NOT_BUILT)
    else:
        log.info("histograms are counted with the compiled loop")


def _warn_non_finite(calibration) -> None:
    for name, tensor in calibration.tensors.items():
        if tensor.nan or tensor.inf:
            log.warning("tensor %s had %d NaN and %d Inf values; they were left out of its histogram",
                        name, tensor.nan, tensor.inf)


def _from_trt_cache(model: str, params: dict, output: Path) -> None:
    from qtool.calib.calibfile import Calibration, TensorCalibration, write_calibration
    from qtool.calib.trtcache import cache_amax, read_cache
    from qtool.graph.types import tensor_elem_types
    from qtool.io.model import input_specs, load_model, model_sha256
    from qtool.versions import tool_versions

    loaded = load_model(model)
    header, scales = read_cache(params["from_trt_cache"])
    known = tensor_elem_types(loaded)
    unknown = [name for name in scales if name not in known]
    if unknown and len(unknown) == len(scales):
        raise QtoolError(f"none of the {len(scales)} tensors in {params['from_trt_cache']} exist in {model}")
    if unknown:
        shown = ", ".join(repr(name) for name in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        log.warning("%d cache tensor(s) are not in the model and were ignored: %s%s",
                    len(unknown), shown, more)
    amax = {name: value for name, value in cache_amax(scales).items() if name in known}
    calibration = Calibration(
        model_sha256=model_sha256(model), method="trt-cache",
        tensors={name: TensorCalibration(amax=value) for name, value in amax.items()},
        params={"header": header}, model_file=Path(model).name,
        inputs=[{"name": s.name, "dtype": str(s.dtype), "shape": list(s.shape)} for s in input_specs(loaded)],
        tools=tool_versions(), config={"from_trt_cache": str(params["from_trt_cache"])},
    )
    write_calibration(calibration, output)
    emit({"output": str(output), "tensors": len(amax), "ignored": unknown}, params["as_json"],
         f"imported {len(amax)} tensors from {params['from_trt_cache']} ({header})\nwrote {output}")
