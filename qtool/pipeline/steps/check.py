"""The check step: the quantized model linted against TensorRT's rules (check.json)."""

from __future__ import annotations

from qtool.options import as_list
from qtool.pipeline.context import PipelineContext
from qtool.pipeline.result import StepRecord


class CheckStep:
    name = "check"

    def run(self, context: PipelineContext) -> StepRecord:
        from qtool.io.atomic import write_json
        from qtool.quantize.check import check_model

        record = context.start(self.name)
        values = context.config.values("check")
        strict = values["strict"]
        report = check_model(context.quantized, ignore=[str(i) for i in as_list(values["ignore"])])
        path = context.output_dir / "check.json"
        write_json(path, {"model": str(context.int8_path), **report.to_dict(strict)})
        record.data.update(output=str(path), **{k: v for k, v in report.to_dict(strict).items()
                                                 if k != "findings"})
        record.detail = report.summary(strict)
        record.status = "ok" if report.passed(strict) else "failed"
        if not report.passed(strict):
            first = next(f for f in report.findings
                         if f.severity == "error" or (strict and f.severity == "warning"))
            record.detail += f"; first: {first.format()}"
        return record
