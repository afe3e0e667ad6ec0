"""What a pipeline run records: one StepRecord per step, and the summary.json they make."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from qtool.errors import QtoolError

SUMMARY_FORMAT = "qtool-pipeline-summary"
SUMMARY_VERSION = 1


@dataclass
class StepRecord:
    name: str
    status: str = "pending"       # ok | reused | skipped | failed | gate_failed
    seconds: float = 0.0
    detail: str = ""              # one line for people
    data: dict = field(default_factory=dict)
    # a step that fails before it starts (a required build without TensorRT): raised after
    # the record is told
    error: QtoolError | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        return {"status": self.status, "seconds": round(self.seconds, 3), "detail": self.detail,
                **self.data}


@dataclass
class PipelineResult:
    config_path: Path
    output_dir: Path
    model_path: Path
    steps: dict[str, StepRecord] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    gates: list = field(default_factory=list)     # GateResult of every compare step
    error: QtoolError | None = None

    @property
    def gate_failed(self) -> bool:
        return any(not gate.passed for gate in self.gates)

    @property
    def exit_status(self) -> int:
        if self.error is not None:
            return self.error.exit_code
        if any(step.status == "failed" for step in self.steps.values()):
            return 1
        return 3 if self.gate_failed else 0

    @property
    def summary_path(self) -> Path:
        return self.output_dir / "summary.json"

    def to_dict(self) -> dict:
        return {
            "format": SUMMARY_FORMAT,
            "version": SUMMARY_VERSION,
            **self.info,
            "steps": {name: step.to_dict() for name, step in self.steps.items()},
            "gates": [gate.to_dict() for gate in self.gates],
            "passed": self.exit_status == 0,
            "exit_status": self.exit_status,
            "error": str(self.error) if self.error is not None else None,
        }


def raise_for(result: PipelineResult) -> None:
    """Turn a finished pipeline into the CLI's exit: the step's error, or GateFailed."""
    if result.error is not None:
        raise result.error
    failed = [step for step in result.steps.values() if step.status == "failed"]
    if failed:
        raise QtoolError(f"{failed[0].name} failed: {failed[0].detail}")
    if result.gate_failed:
        from qtool.analysis.gates import failure_message
        from qtool.errors import GateFailed

        raise GateFailed(failure_message(result.gates))
