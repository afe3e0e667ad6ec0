"""`qtool run` as a library call: an engine over a data set -> outputs.npz (+ a run record).

The data comes through the same readers as calibration (qtool.io.data.open_data), validated
against the engine's own input tensors. Outputs are merged over batches (see outputs.py) and
written atomically; the record OUTPUT.json beside them holds the engine's sha256, the TensorRT
version, the options and the output shapes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from qtool.backends.tensorrt.outputs import merge_batches, write_npz
from qtool.backends.tensorrt.runtime import TensorRTRunner
from qtool.errors import QtoolError, UsageError
from qtool.io.atomic import write_json
from qtool.io.hashing import sha256_file
from qtool.io.outputs import beside, guard_outputs
from qtool.options import require_positive
from qtool.versions import tool_versions

RECORD_FORMAT = "qtool-run"


@dataclass
class RunOptions:
    batch_size: int | None = None
    num_samples: int | None = None
    preprocess: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)  # [inputs] table: batch axes
    loader_script: str | None = None
    log_level: str = "WARNING"

    def validate(self) -> None:
        require_positive(self, ("batch_size", "num_samples"))


@dataclass
class RunResult:
    engine_path: Path
    engine_sha256: str
    output: Path
    data: str | None
    tensorrt_version: str
    batches: int
    samples: int
    seconds: float
    outputs: dict
    options: RunOptions

    def to_dict(self) -> dict:
        return {
            "format": RECORD_FORMAT, "version": 1,
            "engine": {"file": str(self.engine_path), "sha256": self.engine_sha256},
            "data": self.data,
            "output": str(self.output),
            "batches": self.batches,
            "samples": self.samples,
            "inference_seconds": round(self.seconds, 4),
            "outputs": self.outputs,
            "options": dict(self.options.__dict__),
            "tools": {**tool_versions(), "tensorrt": self.tensorrt_version},
        }


def default_output(engine_path) -> Path:
    return beside(engine_path, Path(engine_path).stem + ".outputs.npz")


def record_path(output) -> Path:
    path = Path(output)
    return path.with_name(path.name + ".json")


def check_run_inputs(engine_path, data_path, output, options: RunOptions) -> Path:
    """Checks that need no TensorRT; returns the output path."""
    options.validate()
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        raise QtoolError(f"engine not found: {engine_path}")
    if data_path is None and options.loader_script is None:
        raise UsageError("missing --data PATH (or --data-loader-script FILE)")
    if data_path is not None and not Path(data_path).exists():
        raise QtoolError(f"data not found: {data_path}")
    if options.loader_script is not None and not Path(options.loader_script).is_file():
        raise QtoolError(f"data loader script not found: {options.loader_script}")
    output = Path(output) if output is not None else default_output(engine_path)
    guard_outputs([output, record_path(output)],
                  inputs=[engine_path, data_path, options.loader_script])
    return output


def run_engine(engine_path, data_path, output=None, options: RunOptions | None = None, *,
               trt=None, cuda=None, on_start: Callable | None = None,
               on_batch: Callable | None = None) -> RunResult:
    options = options or RunOptions()
    output = check_run_inputs(engine_path, data_path, output, options)
    from qtool.io.data import open_data

    batches, counts = [], []
    samples = 0
    seconds = 0.0
    with TensorRTRunner(engine_path, log_level=options.log_level, trt=trt, cuda=cuda) as runner:
        source = open_data(data_path, runner.input_specs, preprocess=options.preprocess or None,
                           inputs=options.inputs, batch_size=options.batch_size,
                           num_samples=options.num_samples, loader_script=options.loader_script)
        if on_start is not None:
            on_start(getattr(source, "num_samples", None))
        for feeds in source:
            start = time.perf_counter()
            batches.append(runner.run(feeds))
            seconds += time.perf_counter() - start
            count = source.layout.length(feeds, f"batch {len(batches) - 1}")
            counts.append(count)
            samples += count
            if on_batch is not None:
                on_batch(count)
        names = runner.output_names
        version = runner.tensorrt_version
    if not batches:
        raise QtoolError(f"the data in {data_path or options.loader_script} gave no batches")
    arrays = merge_batches(batches, names, counts)
    write_npz(output, arrays)
    result = RunResult(
        engine_path=Path(engine_path), engine_sha256=sha256_file(engine_path), output=output,
        data=str(data_path) if data_path is not None else None, tensorrt_version=version,
        batches=len(batches), samples=samples, seconds=seconds,
        outputs={key: {"shape": list(a.shape), "dtype": str(a.dtype)} for key, a in arrays.items()},
        options=options,
    )
    write_json(record_path(output), result.to_dict())
    return result
