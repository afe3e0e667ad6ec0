"""What the steps of one pipeline run share: the config, the result being recorded, where the
artifacts go, and what earlier steps made (thresholds, the quantized model)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qtool.backends.onnxruntime.providers import AUTO as AUTO_PROVIDER
from qtool.pipeline.config import PipelineConfig
from qtool.pipeline.result import PipelineResult, StepRecord


class NoProgress:
    """The progress of a run nobody watches."""

    def begin(self, total) -> None:
        pass

    def advance(self, samples: int) -> None:
        pass

    def finish(self) -> None:
        pass


@dataclass
class PipelineContext:
    config: PipelineConfig
    result: PipelineResult
    provider: str = AUTO_PROVIDER
    force_calibrate: bool = False
    # progress(label) may return an object with begin(total), advance(samples) and finish()
    progress: Callable[[str], object] | None = None
    amax: dict | None = None      # the calibrate step's thresholds
    quantized: object = None      # the quantize step's model

    @property
    def stem(self) -> str:
        return self.result.model_path.stem

    @property
    def output_dir(self) -> Path:
        return self.result.output_dir

    @property
    def calib_path(self) -> Path:
        return self.output_dir / f"{self.stem}.calib.json"

    @property
    def int8_path(self) -> Path:
        return self.output_dir / f"{self.stem}.int8.onnx"

    @property
    def engine_path(self) -> Path:
        return self.output_dir / f"{self.stem}.int8.engine"

    @property
    def model_sha256(self) -> str:
        return self.result.info["model"]["sha256"]

    def start(self, name: str) -> StepRecord:
        """The record of step `name`, in the summary from now on."""
        record = StepRecord(name)
        self.result.steps[name] = record
        return record

    @contextlib.contextmanager
    def progress_bar(self, label: str):
        bar = self.progress(label) if self.progress is not None else NoProgress()
        try:
            yield bar
        finally:
            bar.finish()

    def output_paths(self) -> list[Path]:
        """Every file the run may write."""
        from qtool.calib.calibfile import histogram_path_for

        out = self.output_dir
        return [self.result.summary_path, self.calib_path, histogram_path_for(self.calib_path),
                self.int8_path, self.int8_path.with_name(self.int8_path.name + ".data"),
                out / "check.json", out / "compare.json", self.engine_path,
                self.engine_path.with_name(self.engine_path.name + ".json"),
                out / "compare_engine.json"]
