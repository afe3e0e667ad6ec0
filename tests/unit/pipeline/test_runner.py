"""The step runner: every step's record is told and timed, a failing step stops the run with its
error recorded, a step that never starts is not timed."""

from pathlib import Path

import pytest

from qtool.errors import MissingDependency, QtoolError
from qtool.pipeline.config import PipelineConfig
from qtool.pipeline.context import PipelineContext
from qtool.pipeline.result import PipelineResult, StepRecord
from qtool.pipeline.runner import NEEDS, StepRunner


class FakeStep:
    def __init__(self, name, status="ok", error=None, never_starts=False):
        self.name, self.status, self.error, self.never_starts = name, status, error, never_starts

    def run(self, context):
        if self.never_starts:
            record = StepRecord(self.name, self.status, detail="not here", error=self.error)
            context.result.steps[self.name] = record
            return record
        record = context.start(self.name)
        record.data["partial"] = True
        if self.error is not None:
            raise self.error
        record.status = self.status
        return record


@pytest.fixture
def runner(tmp_path):
    result = PipelineResult(tmp_path / "ci.toml", tmp_path / "out", tmp_path / "m.onnx")
    told = []
    runner = StepRunner(PipelineContext(PipelineConfig(Path("ci.toml"), {}), result), told.append)
    runner.start = lambda: None  # no model to look at
    return runner, result, told


def test_records_are_told_in_order(runner):
    runner, result, told = runner
    runner.run([FakeStep("a"), FakeStep("b", "gate_failed")])
    assert [record.name for record in told] == ["a", "b"]
    assert [record.status for record in result.steps.values()] == ["ok", "gate_failed"]


def test_a_failing_step_stops_the_run_and_keeps_what_it_recorded(runner):
    runner, result, told = runner
    with pytest.raises(QtoolError, match="bad data"):
        runner.run([FakeStep("a", error=QtoolError("bad data")), FakeStep("b")])
    record = result.steps["a"]
    assert (record.status, record.detail, record.data) == ("failed", "bad data", {"partial": True})
    assert "b" not in result.steps and told == [record]


def test_a_step_that_never_starts_is_not_timed(runner):
    runner, result, _ = runner
    runner.run([FakeStep("build", "skipped", never_starts=True)])
    assert result.steps["build"].seconds == 0.0
    error = MissingDependency("[build] required = true but no TensorRT")
    with pytest.raises(MissingDependency):
        runner.run([FakeStep("build", "failed", error=error, never_starts=True)])
    assert result.steps["build"].to_dict() == {"status": "failed", "seconds": 0.0,
                                               "detail": "not here"}


def test_the_engine_is_compared_only_once_built(runner):
    runner, result, _ = runner
    assert NEEDS == {"compare_engine": "build"}
    runner.run([FakeStep("build", "skipped", never_starts=True), FakeStep("compare_engine")])
    assert list(result.steps) == ["build"]
    runner.run([FakeStep("build"), FakeStep("compare_engine")])
    assert list(result.steps) == ["build", "compare_engine"]
