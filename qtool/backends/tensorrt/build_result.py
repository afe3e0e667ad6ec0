"""What an engine build produced: the build record written beside the engine as ENGINE.json."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from qtool.backends.tensorrt.build_plan import BuildOptions
from qtool.backends.tensorrt.inspect import EngineSummary
from qtool.versions import tool_versions

RECORD_FORMAT = "qtool-engine"


@dataclass
class BuildResult:
    model_path: Path
    model_sha256: str
    options: BuildOptions
    engine_path: Path
    engine_bytes: int
    engine_sha256: str
    tensorrt_version: str
    typing: str
    precision_flags: list
    fp16_converted: bool
    profiles: list
    build_seconds: float
    summary: EngineSummary
    timing_cache: str | None = None
    notes: list = field(default_factory=list)

    def to_dict(self) -> dict:
        """The build record: written beside the engine as ENGINE.json and printed by --json."""
        return {
            "format": RECORD_FORMAT, "version": 1,
            "model": {"file": str(self.model_path), "sha256": self.model_sha256},
            "engine": {"file": str(self.engine_path), "bytes": self.engine_bytes,
                       "sha256": self.engine_sha256},
            "tensorrt": self.tensorrt_version,
            "typing": self.typing,
            "precision_flags": self.precision_flags,
            "fp16_converted": self.fp16_converted,
            "profiles": [{name: r.to_dict() for name, r in p.items()} for p in self.profiles],
            "build_seconds": round(self.build_seconds, 3),
            "timing_cache": self.timing_cache,
            "notes": self.notes,
            "options": self.options.to_dict(),
            "tools": {**tool_versions(), "tensorrt": self.tensorrt_version},
            "layers": self.summary.to_dict(),
        }
