"""The quantize step: Q/DQ nodes placed for TensorRT, from the calibrate step's thresholds."""

from __future__ import annotations

from qtool.pipeline.context import PipelineContext
from qtool.pipeline.result import StepRecord


class QuantizeStep:
    name = "quantize"

    def run(self, context: PipelineContext) -> StepRecord:
        from qtool.io.model import load_model, save_model
        from qtool.quantize.api import quantize_model, record_provenance
        from qtool.quantize.options import quantize_options

        record = context.start(self.name)
        options = quantize_options(context.config.values("quantize", resolve=False),
                                   context.config.base)
        model = load_model(context.result.model_path)
        means = None
        if options.bias_correction:
            from qtool.calib.calibfile import read_calibration

            means = read_calibration(context.calib_path).load_channel_means()
        quantized, summary = quantize_model(model, context.amax, options, channel_means=means)
        record_provenance(quantized, source_sha256=context.model_sha256,
                          calibration_method=context.result.info.get("method"),
                          options=options.to_dict())
        save_model(quantized, context.int8_path)
        context.quantized = quantized
        record.status = "ok"
        ops = ", ".join(f"{op} {n}" for op, n in sorted(summary.quantized.items())) or "none"
        record.detail = f"{summary.total_quantized} nodes ({ops}) -> {context.int8_path.name}"
        if summary.unmatched_excludes:
            record.detail += f"; excludes matching nothing: {', '.join(summary.unmatched_excludes)}"
        record.data.update(output=str(context.int8_path), **summary.to_dict())
        return record
