"""Runs the pipeline's steps in order and records each one: its time, its status, and the
failure that stops the run. summary.json is written whatever happens."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from qtool.errors import QtoolError, UsageError
from qtool.io.hashing import sha256_file
from qtool.pipeline.config import read_config
from qtool.pipeline.context import PipelineContext
from qtool.pipeline.result import PipelineResult, StepRecord
from qtool.pipeline.steps.build import BuildStep
from qtool.pipeline.steps.calibrate import CalibrateStep
from qtool.pipeline.steps.check import CheckStep
from qtool.pipeline.steps.compare import CompareStep, check_compare
from qtool.pipeline.steps.quantize import QuantizeStep


def default_steps() -> list:
    """calibrate -> quantize -> check -> compare -> build -> compare the engine."""
    return [CalibrateStep(), QuantizeStep(), CheckStep(),
            CompareStep("compare", lambda context: context.int8_path), BuildStep(),
            CompareStep("compare_engine", lambda context: context.engine_path)]


# A step that runs only after another step did (the engine is compared only once built).
NEEDS = {"compare_engine": "build"}


class StepRunner:
    """Runs steps, timing each and telling `on_step` about every record."""

    def __init__(self, context: PipelineContext, on_step: Callable[[StepRecord], None] | None):
        self.context = context
        self.on_step = on_step

    def run(self, steps: list) -> None:
        """Every step in order; a step's QtoolError stops the run (recorded, then raised)."""
        self.start()
        for step in steps:
            needed = NEEDS.get(step.name)
            if needed is not None and self.status(needed) != "ok":
                continue
            self.run_step(step)

    def status(self, name: str) -> str | None:
        record = self.context.result.steps.get(name)
        return None if record is None else record.status

    def start(self) -> None:
        """The run's facts in the summary; the model must be there and [compare] make sense
        before anything is calibrated."""
        from qtool.io.model import model_sha256

        result, config = self.context.result, self.context.config
        if not result.model_path.is_file():
            raise QtoolError(f"model not found: {result.model_path} ([pipeline] model)")
        result.info.update({
            "config": {"path": str(result.config_path),
                       "sha256": sha256_file(result.config_path), "tables": config.tables},
            "model": {"path": str(result.model_path), "sha256": model_sha256(result.model_path)},
            "output_dir": str(result.output_dir),
        })
        if config.table("compare"):
            check_compare(self.context)  # a mistake there fails now, not after calibrating

    def run_step(self, step) -> StepRecord:
        """The step's record: timed unless the step never started (skipped, or failed before
        starting, whose error is raised once the record is told)."""
        start = time.perf_counter()
        record = None
        try:
            record = step.run(self.context)
        except QtoolError as exc:
            record = self.context.result.steps.setdefault(step.name, StepRecord(step.name))
            record.status = "failed"
            record.detail = str(exc)
            raise
        finally:
            if record is None:  # not a QtoolError: a bug, recorded as a failure
                record = self.context.result.steps.setdefault(step.name, StepRecord(step.name))
            if record.status not in ("skipped",) and record.error is None:
                record.seconds = time.perf_counter() - start
            if record.status == "pending":
                record.status = "failed"
            if self.on_step is not None:
                self.on_step(record)
        if record.error is not None:
            raise record.error
        return record


def run_pipeline(config_path: str | os.PathLike, output_dir: str | os.PathLike | None = None,
                 force_calibrate: bool = False,
                 on_step: Callable[[StepRecord], None] | None = None,
                 progress: Callable[[str], object] | None = None,
                 provider: str | None = None) -> PipelineResult:
    """Run every step; summary.json is written even when a step fails. Never raises for a failed
    step or gate: the result's exit_status and error say what happened.

    `provider`: where onnxruntime runs calibration and comparison (default: [pipeline]
    provider, else auto).

    `progress(label)` may return an object with begin(total), advance(samples) and finish(), told
    about the batches of the calibrate and compare steps."""
    config = read_config(config_path)
    model_path = config.path_of("pipeline", "model")
    if model_path is None:
        raise UsageError(f"[pipeline] model is required in {config.path}")
    out = Path(output_dir) if output_dir is not None else (
        config.path_of("pipeline", "output_dir") or config.base / "out" / config.path.stem)
    result = PipelineResult(config.path, out, model_path)
    context = PipelineContext(config, result, provider or config.values("pipeline")["provider"],
                              force_calibrate, progress)
    guard_outputs(context)  # before the output folder is made: a refused run writes nothing
    make_output_dir(out)
    try:
        StepRunner(context, on_step).run(default_steps())
    except QtoolError as exc:
        result.error = exc
    finally:
        from qtool.io.atomic import write_json

        result.info.setdefault("tools", versions(result))
        write_json(result.summary_path, result.to_dict())
    return result


def guard_outputs(context: PipelineContext) -> None:
    """Every file the run may write, checked against every file and folder it reads."""
    from qtool.io.outputs import guard_outputs as guard

    guard(context.output_paths(), models=[context.result.model_path],
          inputs=[context.result.config_path] + context.config.read_paths())


def make_output_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from qtool.io.atomic import reason

        raise QtoolError(f"cannot create the output folder {out}: {reason(exc)}") from None


def versions(result: PipelineResult) -> dict:
    from qtool.versions import tool_versions

    versions = tool_versions()
    build = result.steps.get("build")
    if build is not None and build.data.get("tensorrt"):
        versions["tensorrt"] = build.data["tensorrt"]
    return versions
