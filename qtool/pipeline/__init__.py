"""The CI step as a library: calibrate -> quantize -> check -> compare (-> build -> compare the
engine), every option from one TOML file, every artifact in one output folder.

Config tables and their keys (the same names as the commands' options, with '_' for '-'):

    [pipeline]    model (required), output_dir, reuse_calibration (default true),
                  provider (onnxruntime's execution providers: cpu, cuda, tensorrt, auto)
    [preprocess]  image preprocessing, for calibration and comparison data alike
    [inputs.NAME] batch_axis of a model input (an axis number or "none"), for every data read
    [calibrate]   data (required), loader_script, method, bins, percentile, coverage,
                  num_samples, batch_size, bounded_max, task (default: classification when
                  [compare] is), auto_budget
    [quantize]    op_types, exclude, exclude_op_type, exclude_file, per_tensor_weights, weights,
                  conv_transpose_per_tensor, high_precision, bias_correction
    [check]       strict, ignore
    [compare]     data (required), loader_script, labels, task, logits, ctc_blank, metric_script,
                  num_samples, batch_size, min_sqnr, min_cosine, max_top1_drop, min_agreement,
                  max_flips_above_margin ("N:M"), min_metric, max_metric ("NAME=VALUE" or a
                  list of them)
    [build]       required (default false), int8 (default true), fp16, strongly_typed, shapes,
                  batch, workspace, timing_cache, builder_optimization_level
    [sensitivity] read by `qtool sensitivity --config`, not by the pipeline

Relative paths in the config resolve against the config file's folder; output_dir defaults to
out/<config name> there. Unknown tables or keys are usage errors (a typo never silently does
nothing).

Calibration reuse: the calibration file records a cache key, the sha256 of the model's sha256,
the content of every data file (or the loader script's text) and the calibration and
preprocessing options. A re-run whose key matches the file in the output folder reuses it.

Outcome: every step is recorded in summary.json (versions, model sha256, method, per-step time,
metrics, gates) whatever happens. Exit status: 0 when every step passed, 3 when an accuracy gate
failed, 1 when a step failed (check errors, a missing required TensorRT, bad data, ...).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from qtool.config import load_config
from qtool.errors import GateFailed, MissingDependency, QtoolError, UsageError
from qtool.io.hashing import sha256_file
from qtool.quantize.options import DEFAULT_OP_TYPES, QuantizeOptions, split_op_types

SUMMARY_FORMAT = "qtool-pipeline-summary"
SUMMARY_VERSION = 1

# table -> {key: accepted python types}
TABLE_KEYS: dict[str, dict[str, tuple]] = {
    "pipeline": {"model": (str,), "output_dir": (str,), "reuse_calibration": (bool,),
                 "provider": (str,)},
    "calibrate": {"data": (str,), "loader_script": (str,), "method": (str,), "bins": (int,),
                  "percentile": (int, float), "coverage": (int, float), "num_samples": (int,),
                  "batch_size": (int,), "bounded_max": (bool,), "task": (str,),
                  "auto_budget": (int, float)},
    "quantize": {"op_types": (str, list), "exclude": (str, list), "exclude_op_type": (str, list),
                 "exclude_file": (str,), "per_tensor_weights": (bool,), "weights": (str,),
                 "conv_transpose_per_tensor": (bool,), "high_precision": (str,),
                 "bias_correction": (bool,)},
    "check": {"strict": (bool,), "ignore": (str, list)},
    "compare": {"data": (str,), "loader_script": (str,), "labels": (str,), "task": (str,),
                "logits": (str,), "num_samples": (int,), "batch_size": (int,),
                "min_sqnr": (int, float), "min_cosine": (int, float),
                "max_top1_drop": (int, float), "min_agreement": (int, float),
                "ctc_blank": (int,), "metric_script": (str,), "max_flips_above_margin": (str,),
                "min_metric": (str, list), "max_metric": (str, list)},
    "build": {"required": (bool,), "int8": (bool,), "fp16": (bool,), "strongly_typed": (bool,),
              "shapes": (str, list), "batch": (int,), "workspace": (int,), "timing_cache": (str,),
              "builder_optimization_level": (int,)},
}
FREE_TABLES = ("preprocess", "inputs", "sensitivity", "limits")  # checked by their own readers
PATH_KEYS = {("pipeline", "model"), ("pipeline", "output_dir"), ("calibrate", "data"),
             ("calibrate", "loader_script"), ("quantize", "exclude_file"), ("compare", "data"),
             ("compare", "loader_script"), ("compare", "labels"), ("compare", "metric_script"),
             ("build", "timing_cache")}
# Not inputs the outputs must stay clear of: the output folder itself, and the timing cache,
# which the build reads and then updates.
READ_WRITE_KEYS = {("pipeline", "output_dir"), ("build", "timing_cache")}


def _as_list(value) -> list:
    return list(value) if isinstance(value, list) else [value]


def _type_names(types: tuple) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
             list: "a list"}
    return " or ".join(names[t] for t in types if not (t is int and float in types))


def check_tables(config: dict, path) -> None:
    """Unknown tables and keys, and values of the wrong type, are usage errors."""
    for name, table in config.items():
        if name in FREE_TABLES:
            if not isinstance(table, dict):
                raise UsageError(f"[{name}] in {path} must be a table")
            continue
        if name not in TABLE_KEYS:
            known = ", ".join(f"[{t}]" for t in list(TABLE_KEYS) + list(FREE_TABLES))
            raise UsageError(f"unknown table [{name}] in {path} (known: {known})")
        if not isinstance(table, dict):
            raise UsageError(f"[{name}] in {path} must be a table")
        for key, value in table.items():
            types = TABLE_KEYS[name].get(key)
            if types is None:
                raise UsageError(f"unknown key {key!r} in [{name}] of {path} "
                                 f"(known: {', '.join(TABLE_KEYS[name])})")
            ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
            if isinstance(value, list):
                ok = ok and all(isinstance(item, str) for item in value)
            if not ok:
                raise UsageError(f"[{name}] {key} in {path} must be {_type_names(types)}, "
                                 f"not {value!r}")


def quantize_options(table: dict, base_dir: Path | None = None) -> QuantizeOptions:
    """QuantizeOptions from a [quantize] table (exclude_file patterns included)."""
    from qtool.placement.exclude import read_exclude_file

    unknown = set(table) - set(TABLE_KEYS["quantize"])
    if unknown:
        raise UsageError(f"unknown key {min(unknown)!r} in [quantize]")
    excludes = [str(item) for item in _as_list(table.get("exclude", []))]
    if table.get("exclude_file"):
        path = Path(table["exclude_file"])
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        excludes += read_exclude_file(path)
    options = QuantizeOptions(
        op_types=split_op_types(table["op_types"]) if "op_types" in table else DEFAULT_OP_TYPES,
        exclude=tuple(excludes),
        exclude_op_types=split_op_types(table.get("exclude_op_type", [])),
        per_tensor_weights=bool(table.get("per_tensor_weights", False)),
        weights=table.get("weights", "fp32"),
        conv_transpose_per_tensor=bool(table.get("conv_transpose_per_tensor", False)),
        high_precision=table.get("high_precision", "fp32"),
        bias_correction=table.get("bias_correction", True),
    )
    return options.validate()


@dataclass
class StepRecord:
    name: str
    status: str = "pending"       # ok | reused | skipped | failed | gate_failed
    seconds: float = 0.0
    detail: str = ""              # one line for people
    data: dict = field(default_factory=dict)

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


class _Paths:
    """Config values that name files, resolved against the config file's folder."""

    def __init__(self, config: dict, base: Path):
        self.config = config
        self.base = base

    def get(self, table: str, key: str) -> Path | None:
        value = self.config.get(table, {}).get(key)
        if value is None:
            return None
        path = Path(os.path.expanduser(value))
        return path if path.is_absolute() else Path(os.path.normpath(self.base / path))


def data_fingerprint(source, loader_script) -> dict:
    """What the calibration data is, by content: one sha256 per file (or of the loader script)."""
    if loader_script is not None:
        return {"loader_script_sha256": sha256_file(loader_script)}
    root = Path(source.root)
    return {"files": [[f.relative_to(root).as_posix() if f.is_relative_to(root) else f.name,
                       sha256_file(f)] for f in source.files]}


# Options that only pick thresholds from the histograms: changing them needs no new inference.
THRESHOLD_OPTIONS = ("method", "percentile", "coverage")


def calibration_key(model_sha256: str, options, fingerprint: dict,
                    thresholds: bool = True) -> str:
    """What a calibration depends on, hashed; without `thresholds`, what its histograms depend on."""
    # where onnxruntime ran changes no count: a calibration made on a GPU serves a CPU run too
    skip = {"shard", "provider"} | (set() if thresholds else set(THRESHOLD_OPTIONS))
    record = {"model": model_sha256, "data": fingerprint,
              "options": {k: v for k, v in asdict(options).items() if k not in skip}}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


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
    from qtool import limits

    config_path = Path(config_path)
    config = load_config(config_path)
    check_tables(config, config_path)
    limits.configure(config.get("limits"))
    base = config_path.resolve().parent
    paths = _Paths(config, base)
    model_path = paths.get("pipeline", "model")
    if model_path is None:
        raise UsageError(f"[pipeline] model is required in {config_path}")
    if output_dir is not None:
        out = Path(output_dir)
    else:
        out = paths.get("pipeline", "output_dir") or base / "out" / config_path.stem
    result = PipelineResult(config_path, out, model_path)
    provider = provider or config.get("pipeline", {}).get("provider", "auto")
    runner = _Runner(config, paths, result, force_calibrate, on_step, progress, provider)
    runner.guard_outputs()  # before the output folder is made: a refused run writes nothing
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from qtool.io.outputs import reason

        raise QtoolError(f"cannot create the output folder {out}: {reason(exc)}") from None
    try:
        runner.run()
    except QtoolError as exc:
        result.error = exc
    finally:
        from qtool.io.atomic import write_json

        result.info.setdefault("tools", _versions(result))
        write_json(result.summary_path, result.to_dict())
    return result


class _NoProgress:
    def begin(self, total) -> None:
        pass

    def advance(self, samples: int) -> None:
        pass

    def finish(self) -> None:
        pass


def _versions(result: PipelineResult) -> dict:
    from qtool.versions import tool_versions

    versions = tool_versions()
    build = result.steps.get("build")
    if build is not None and build.data.get("tensorrt"):
        versions["tensorrt"] = build.data["tensorrt"]
    return versions


class _Runner:
    def __init__(self, config: dict, paths: _Paths, result: PipelineResult, force_calibrate: bool,
                 on_step, progress=None, provider: str = "auto"):
        self.config = config
        self.provider = provider
        self.paths = paths
        self.result = result
        self.force_calibrate = force_calibrate
        self.on_step = on_step
        self.progress = progress
        self.table = lambda name: config.get(name, {})
        stem = result.model_path.stem
        self.calib_path = result.output_dir / f"{stem}.calib.json"
        self.int8_path = result.output_dir / f"{stem}.int8.onnx"
        self.engine_path = result.output_dir / f"{stem}.int8.engine"

    def guard_outputs(self) -> None:
        """Every file the run may write, checked against every file and folder it reads."""
        from qtool.calib.calibfile import histogram_path_for
        from qtool.io.outputs import guard_outputs

        out = self.result.output_dir
        outputs = [self.result.summary_path, self.calib_path, histogram_path_for(self.calib_path),
                   self.int8_path, self.int8_path.with_name(self.int8_path.name + ".data"),
                   out / "check.json", out / "compare.json", self.engine_path,
                   self.engine_path.with_name(self.engine_path.name + ".json"),
                   out / "compare_engine.json"]
        inputs = [self.result.config_path] + [self.paths.get(table, key) for table, key in PATH_KEYS
                                              if (table, key) not in READ_WRITE_KEYS]
        guard_outputs(outputs, models=[self.result.model_path], inputs=inputs)

    def step(self, name: str, work: Callable[[StepRecord], None]) -> StepRecord:
        record = StepRecord(name)
        self.result.steps[name] = record
        start = time.perf_counter()
        try:
            work(record)
        except QtoolError as exc:
            record.status = "failed"
            record.detail = str(exc)
            raise
        finally:
            record.seconds = time.perf_counter() - start
            if record.status == "pending":
                record.status = "failed"
            if self.on_step is not None:
                self.on_step(record)
        return record

    @contextlib.contextmanager
    def _progress(self, label: str):
        bar = self.progress(label) if self.progress is not None else _NoProgress()
        try:
            yield bar
        finally:
            bar.finish()

    def skip(self, name: str, reason: str) -> None:
        record = StepRecord(name, "skipped", detail=reason)
        self.result.steps[name] = record
        if self.on_step is not None:
            self.on_step(record)

    def run(self) -> None:
        from qtool.io.model import model_sha256

        result = self.result
        if not result.model_path.is_file():
            raise QtoolError(f"model not found: {result.model_path} ([pipeline] model)")
        result.info.update({
            "config": {"path": str(result.config_path),
                       "sha256": sha256_file(result.config_path), "tables": self.config},
            "model": {"path": str(result.model_path), "sha256": model_sha256(result.model_path)},
            "output_dir": str(result.output_dir),
        })
        if self.config.get("compare"):
            self.check_compare()  # a mistake there fails now, not after calibrating
        self.step("calibrate", self.calibrate)
        self.step("quantize", self.quantize)
        self.step("check", self.check)
        self.step("compare", lambda record: self.compare(record, self.int8_path))
        self.build()

    # -- steps ---------------------------------------------------------------------------------

    def calibrate(self, record: StepRecord) -> None:
        from qtool.calib.api import CalibrateOptions, calibrate
        from qtool.calib.auto import AUTO
        from qtool.calib.calibfile import read_calibration, write_calibration
        from qtool.calib.merge import rethreshold
        from qtool.calib.thresholding import warn_poor_thresholds
        from qtool.io.data import open_data
        from qtool.io.model import input_specs, load_model

        table = self.table("calibrate")
        data = self.paths.get("calibrate", "data")
        script = self.paths.get("calibrate", "loader_script")
        if data is None and script is None:
            raise UsageError("[calibrate] data (or loader_script) is required")
        options = CalibrateOptions(
            method=table.get("method", CalibrateOptions.method), bins=table.get("bins", 2048),
            percentile=float(table.get("percentile", 99.99)),
            coverage=None if "coverage" not in table else float(table["coverage"]),
            num_samples=table.get("num_samples"), batch_size=table.get("batch_size"),
            bounded_max=table.get("bounded_max", True), preprocess=self.table("preprocess"),
            inputs=self.table("inputs"),
            loader_script=None if script is None else str(script),
            # only auto reads the task: other methods' cache keys stay as they were
            task=table.get("task", self._compare_task()
                           if table.get("method", CalibrateOptions.method) == AUTO else None),
            auto_budget=float(table.get("auto_budget", CalibrateOptions.auto_budget)),
            provider=self.provider,
        )
        options.validate()
        sha256 = self.result.info["model"]["sha256"]
        model = load_model(self.result.model_path, load_weights=False)
        fingerprint_source = None
        if script is None:
            fingerprint_source = open_data(data, input_specs(model),
                                           preprocess=options.preprocess or None,
                                           inputs=options.inputs,
                                           batch_size=options.batch_size,
                                           num_samples=options.num_samples)
        fingerprint = data_fingerprint(fingerprint_source, script)
        key = calibration_key(sha256, options, fingerprint)
        histogram_key = calibration_key(sha256, options, fingerprint, thresholds=False)
        self.result.info["method"] = options.method
        record.data.update(output=str(self.calib_path), cache_key=key)
        reuse = self.table("pipeline").get("reuse_calibration", True) and not self.force_calibrate
        existing = None  # a calibration of this model already in place
        if reuse and self.calib_path.is_file():
            with contextlib.suppress(QtoolError):
                existing = read_calibration(self.calib_path)
            if existing is not None and existing.model_sha256 != sha256:
                existing = None
        if existing is not None and existing.config.get("cache_key") == key:
            self.amax = existing.amax
            record.status = "reused"
            record.detail = (f"{self.calib_path.name}: model, data and options unchanged "
                             f"(cache key {key[:12]})")
            record.data.update(tensors=len(existing.tensors), samples=existing.num_samples)
            return
        run = None
        if existing is not None and existing.config.get("histogram_key") == histogram_key:
            # only the threshold options changed: pick thresholds again from the histograms
            with contextlib.suppress(QtoolError):  # histograms unreadable: calibrate again
                run = rethreshold(existing, options.method, options.method_params())
            how = "histograms reused (no inference), thresholds picked again"
        if run is None:
            with self._progress("calibrating") as bar:
                quantize = quantize_options(self.table("quantize"),
                                            self.result.config_path.resolve().parent)
                run = calibrate(self.result.model_path, None if script is not None else data,
                                options, on_batch=bar.advance, on_start=bar.begin,
                                quantize=quantize)
            how = f"{len(run.calibration.tensors)} tensors on {run.calibration.num_samples} samples"
        calibration = run.calibration
        calibration.config.update(cache_key=key, histogram_key=histogram_key)
        write_calibration(calibration, self.calib_path, run.histograms, run.means)
        poor = warn_poor_thresholds(calibration, run.histograms)
        record.data.update(poor_thresholds=[item.tensor for item in poor])
        self.amax = calibration.amax
        record.status = "ok"
        record.detail = f"{how}, method {calibration.method} -> {self.calib_path.name}"
        record.data.update(tensors=len(calibration.tensors), samples=calibration.num_samples)

    def _compare_task(self) -> str | None:
        """The comparison's task, which method auto then scores: classification when the
        [compare] table names it or gives labels."""
        table = self.table("compare")
        return "classification" if table.get("task") == "classification" or table.get(
            "labels") else None

    def quantize(self, record: StepRecord) -> None:
        from qtool.io.model import load_model, save_model
        from qtool.quantize.api import quantize_model, record_provenance

        base = self.result.config_path.resolve().parent
        options = quantize_options(self.table("quantize"), base)
        model = load_model(self.result.model_path)
        means = None
        if options.bias_correction:
            from qtool.calib.calibfile import read_calibration

            means = read_calibration(self.calib_path).load_channel_means()
        quantized, summary = quantize_model(model, self.amax, options, channel_means=means)
        record_provenance(quantized, source_sha256=self.result.info["model"]["sha256"],
                          calibration_method=self.result.info.get("method"),
                          options=options.to_dict())
        save_model(quantized, self.int8_path)
        self.quantized = quantized
        record.status = "ok"
        ops = ", ".join(f"{op} {n}" for op, n in sorted(summary.quantized.items())) or "none"
        record.detail = f"{summary.total_quantized} nodes ({ops}) -> {self.int8_path.name}"
        if summary.unmatched_excludes:
            record.detail += f"; excludes matching nothing: {', '.join(summary.unmatched_excludes)}"
        record.data.update(output=str(self.int8_path), **summary.to_dict())

    def check(self, record: StepRecord) -> None:
        from qtool.io.atomic import write_json
        from qtool.quantize.check import check_model

        table = self.table("check")
        strict = table.get("strict", False)
        report = check_model(self.quantized, ignore=[str(i) for i in _as_list(table.get("ignore", []))])
        path = self.result.output_dir / "check.json"
        write_json(path, {"model": str(self.int8_path), **report.to_dict(strict)})
        record.data.update(output=str(path), **{k: v for k, v in report.to_dict(strict).items()
                                                 if k != "findings"})
        record.detail = report.summary(strict)
        record.status = "ok" if report.passed(strict) else "failed"
        if not report.passed(strict):
            first = next(f for f in report.findings
                         if f.severity == "error" or (strict and f.severity == "warning"))
            record.detail += f"; first: {first.format()}"

    def check_compare(self) -> None:
        """The compare step's options, gates and metric script, checked before any inference."""
        from qtool.analysis.compare import check_before_inference

        check_before_inference(self._compare_options())

    def _compare_options(self):
        from qtool.analysis.compare import CompareOptions
        from qtool.analysis.gates import Gates, parse_flips_bound, parse_metric_bound

        table = self.table("compare")
        labels = self.paths.get("compare", "labels")
        script = self.paths.get("compare", "loader_script")
        metric_script = self.paths.get("compare", "metric_script")
        flips = table.get("max_flips_above_margin")

        def number(key):
            return None if key not in table else float(table[key])

        def bounds(key):
            return tuple(parse_metric_bound(text, f"[compare] {key}")
                         for text in _as_list(table.get(key, [])))

        return CompareOptions(
            num_samples=table.get("num_samples"), batch_size=table.get("batch_size"),
            preprocess=self.table("preprocess"), inputs=self.table("inputs"),
            loader_script=None if script is None else str(script),
            labels=None if labels is None else str(labels), task=table.get("task"),
            logits=table.get("logits"), ctc_blank=table.get("ctc_blank"),
            metric_script=None if metric_script is None else str(metric_script),
            gates=Gates(number("min_sqnr"), number("min_cosine"), number("max_top1_drop"),
                        number("min_agreement"),
                        max_flips_above_margin=None if flips is None else parse_flips_bound(flips),
                        min_metric=bounds("min_metric"), max_metric=bounds("max_metric")),
            provider=self.provider,
        )

    def compare(self, record: StepRecord, candidate: Path, name: str = "compare") -> None:
        from qtool.analysis.compare import compare_models
        from qtool.analysis.metrics import format_number
        from qtool.io.atomic import write_json

        data = self.paths.get("compare", "data")
        options = self._compare_options()
        if data is None and options.loader_script is None:
            raise UsageError("[compare] data (or loader_script) is required")
        path = self.result.output_dir / f"{name}.json"
        with self._progress("comparing") as bar:
            compared = compare_models(self.result.model_path, candidate,
                                      None if options.loader_script else data, options,
                                      on_batch=bar.advance, on_start=bar.begin, output=path)
        report = compared.to_dict()
        write_json(path, report)
        self.result.gates.extend(compared.gate_results)
        record.status = "ok" if compared.passed else "gate_failed"
        record.data.update(output=str(path), samples=compared.samples,
                           outputs=report["outputs"], classification=report["classification"],
                           sequence=report["sequence"], metrics=report["metrics"],
                           gates=report["gates"], passed=compared.passed)
        self.result.info.setdefault("metrics", {})[name] = _headline(report)
        worst = min(compared.outputs.values(), key=lambda stats: stats.sqnr_db)

        record.detail = (f"{compared.samples} samples: sqnr {format_number(worst.sqnr_db)} dB, "
                         f"cosine {format_number(worst.cosine, 6)}")
        cls = compared.classification
        if cls is not None:
            record.detail += f", top-1 agreement {cls.agreement:.2f}%"
            if cls.labelled:
                record.detail += (f", top-1 {cls.accuracy('reference'):.2f}% -> "
                                  f"{cls.accuracy('candidate'):.2f}%")
        seq = compared.sequence
        if seq is not None:
            record.detail += f", position agreement {seq.agreement:.2f}%"
            if seq.same_sequence is not None:
                record.detail += f", same sequence {seq.same_sequence:.2f}%"
        for metric, value in compared.metrics.items():
            record.detail += f", {metric} {format_number(value, 6)}"
        if not compared.passed:
            record.detail += "; " + compared.failure()

    def build(self) -> None:
        from qtool.backends.availability import tensorrt_component

        table = self.table("build")
        required = table.get("required", False)
        if any(step.status == "failed" for step in self.result.steps.values()):
            self.skip("build", "an earlier step failed")
            return
        if self.result.gate_failed:
            self.skip("build", "the accuracy gate failed")
            return
        component = tensorrt_component(start_builder=True)
        if not component.available:
            if required:
                record = StepRecord("build", "failed", detail=component.detail)
                self.result.steps["build"] = record
                if self.on_step is not None:
                    self.on_step(record)
                raise MissingDependency(f"[build] required = true but {component.detail}")
            self.skip("build", component.detail)
            return
        self.step("build", self._build_engine)
        self.step("compare_engine",
                  lambda record: self.compare(record, self.engine_path, "compare_engine"))

    def _build_engine(self, record: StepRecord) -> None:
        from qtool.backends.tensorrt.build import BuildOptions, build_engine

        table = self.table("build")
        cache = self.paths.get("build", "timing_cache")
        options = BuildOptions(
            int8=table.get("int8", True), fp16=table.get("fp16", False),
            strongly_typed=table.get("strongly_typed", False),
            shapes=[str(s) for s in _as_list(table.get("shapes", []))],
            batch=table.get("batch"),  # without shapes: sizes from the calibration file beside
            workspace_mib=table.get("workspace"),
            timing_cache=None if cache is None else str(cache),
            builder_optimization_level=table.get("builder_optimization_level"),
        )
        built = build_engine(self.int8_path, self.engine_path, options)
        record.status = "ok"
        record.detail = (f"{self.engine_path.name}: TensorRT {built.tensorrt_version}, "
                         f"{built.typing}, {built.build_seconds:.1f}s")
        record.data.update(output=str(self.engine_path), tensorrt=built.tensorrt_version,
                           engine_sha256=built.engine_sha256, typing=built.typing)


def _headline(report: dict) -> dict:
    """The numbers a CI log wants from a compare report."""
    headline = {"samples": report["samples"],
                "sqnr_db": {name: o["sqnr_db"] for name, o in report["outputs"].items()},
                "cosine": {name: o["cosine"] for name, o in report["outputs"].items()}}
    cls = report["classification"]
    if cls:
        headline["top1_agreement_percent"] = cls["top1_agreement_percent"]
        if "reference" in cls:
            headline["fp32_top1_percent"] = cls["reference"]["top1_percent"]
            headline["int8_top1_percent"] = cls["candidate"]["top1_percent"]
            headline["top1_drop_points"] = cls["top1_drop_points"]
    seq = report["sequence"]
    if seq:
        headline["position_agreement_percent"] = seq["position_agreement_percent"]
        if "ctc" in seq:
            headline["same_sequence_percent"] = seq["ctc"]["same_sequence_percent"]
            headline["token_error_rate_percent"] = seq["ctc"]["token_error_rate_percent"]
    if report["metrics"]:
        headline["metrics"] = report["metrics"]
    return headline


def raise_for(result: PipelineResult) -> None:
    """Turn a finished pipeline into the CLI's exit: the step's error, or GateFailed."""
    if result.error is not None:
        raise result.error
    failed = [step for step in result.steps.values() if step.status == "failed"]
    if failed:
        raise QtoolError(f"{failed[0].name} failed: {failed[0].detail}")
    if result.gate_failed:
        from qtool.analysis.gates import failure_message

        raise GateFailed(failure_message(result.gates))
