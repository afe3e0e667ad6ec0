"""The calibrate step: thresholds for every tensor to quantize, reusing the calibration file in
the output folder when model, data and options are unchanged (qtool.calib.reuse)."""

from __future__ import annotations

from qtool.errors import UsageError
from qtool.pipeline.context import PipelineContext
from qtool.pipeline.result import StepRecord


class CalibrateStep:
    name = "calibrate"

    def run(self, context: PipelineContext) -> StepRecord:
        from qtool.calib.reuse import Reuse, calibration_keys, find_reuse

        record = context.start(self.name)
        values = context.config.values("calibrate")
        data, script = values["data"], values["loader_script"]
        if data is None and script is None:
            raise UsageError("[calibrate] data (or loader_script) is required")
        options = self.options(context, values)
        sha256 = context.model_sha256
        keys = calibration_keys(context.result.model_path, sha256, data, options)
        context.result.info["method"] = options.method
        record.data.update(output=str(context.calib_path), cache_key=keys.key)
        reuse = Reuse()
        if context.config.values("pipeline")["reuse_calibration"] and not context.force_calibrate:
            reuse = find_reuse(context.calib_path, sha256, keys, options)
        if reuse.calibration is not None:
            context.amax = reuse.calibration.amax
            record.status = "reused"
            record.detail = (f"{context.calib_path.name}: model, data and options unchanged "
                             f"(cache key {keys.key[:12]})")
            record.data.update(tensors=len(reuse.calibration.tensors),
                               samples=reuse.calibration.num_samples)
            return record
        run = reuse.rethresholded
        how = "histograms reused (no inference), thresholds picked again"
        if run is None:
            run = self.calibrate(context, None if script is not None else data, options)
            how = f"{len(run.calibration.tensors)} tensors on {run.calibration.num_samples} samples"
        keys.record(run.calibration)
        return self.write(context, record, run, how)

    @staticmethod
    def options(context: PipelineContext, values: dict):
        from qtool.calib.choices import AUTO
        from qtool.calib.options import calibrate_options

        if "task" not in context.config.table("calibrate"):
            # only auto reads the task: other methods' cache keys stay as they were
            values["task"] = compare_task(context) if values["method"] == AUTO else None
        options = calibrate_options(values, preprocess=context.config.table("preprocess"),
                                    inputs=context.config.table("inputs"),
                                    provider=context.provider)
        options.validate()
        return options

    @staticmethod
    def calibrate(context: PipelineContext, data, options):
        from qtool.calib.api import calibrate
        from qtool.quantize.options import quantize_options

        with context.progress_bar("calibrating") as bar:
            quantize = quantize_options(context.config.values("quantize", resolve=False),
                                        context.config.base)
            return calibrate(context.result.model_path, data, options, on_batch=bar.advance,
                             on_start=bar.begin, quantize=quantize, sha256=context.model_sha256)

    @staticmethod
    def write(context: PipelineContext, record: StepRecord, run, how: str) -> StepRecord:
        from qtool.calib.calibfile import write_calibration
        from qtool.calib.thresholding import warn_poor_thresholds

        calibration = run.calibration
        write_calibration(calibration, context.calib_path, run.histograms, run.means)
        poor = warn_poor_thresholds(calibration, run.histograms)
        record.data.update(poor_thresholds=[item.tensor for item in poor])
        context.amax = calibration.amax
        record.status = "ok"
        record.detail = f"{how}, method {calibration.method} -> {context.calib_path.name}"
        record.data.update(tensors=len(calibration.tensors), samples=calibration.num_samples)
        return record


def compare_task(context: PipelineContext) -> str | None:
    """The comparison's task, which method auto then scores: classification when the [compare]
    table names it or gives labels."""
    table = context.config.table("compare")
    return "classification" if table.get("task") == "classification" or table.get(
        "labels") else None
