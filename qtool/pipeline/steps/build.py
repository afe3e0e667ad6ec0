"""The build step: a TensorRT engine from the quantized model, when TensorRT and a GPU are
there (and a failure when [build] required = true and they are not)."""

from __future__ import annotations

from qtool.errors import MissingDependency
from qtool.pipeline.context import PipelineContext
from qtool.pipeline.result import StepRecord


class BuildStep:
    name = "build"

    def run(self, context: PipelineContext) -> StepRecord:
        blocked = self.blocked(context)
        if blocked is not None:
            return blocked
        from qtool.backends.tensorrt.build import build_engine
        from qtool.backends.tensorrt.build_options import PIPELINE_DEFAULTS, build_options

        record = context.start(self.name)
        options = build_options(context.config.values("build", PIPELINE_DEFAULTS))
        built = build_engine(context.int8_path, context.engine_path, options)
        record.status = "ok"
        record.detail = (f"{context.engine_path.name}: TensorRT {built.tensorrt_version}, "
                         f"{built.typing}, {built.build_seconds:.1f}s")
        record.data.update(output=str(context.engine_path), tensorrt=built.tensorrt_version,
                           engine_sha256=built.engine_sha256, typing=built.typing)
        return record

    def blocked(self, context: PipelineContext) -> StepRecord | None:
        """The record of a build that does not start: skipped, or failed (with its error) when
        required; None when it may start."""
        from qtool.backends.availability import tensorrt_component

        if any(step.status == "failed" for step in context.result.steps.values()):
            return self.skipped(context, "an earlier step failed")
        if context.result.gate_failed:
            return self.skipped(context, "the accuracy gate failed")
        component = tensorrt_component(start_builder=True)
        if component.available:
            return None
        if context.config.values("build")["required"]:
            record = StepRecord(self.name, "failed", detail=component.detail,
                                error=MissingDependency(f"[build] required = true but "
                                                        f"{component.detail}"))
            context.result.steps[self.name] = record
            return record
        return self.skipped(context, component.detail)

    def skipped(self, context: PipelineContext, reason: str) -> StepRecord:
        record = StepRecord(self.name, "skipped", detail=reason)
        context.result.steps[self.name] = record
        return record
