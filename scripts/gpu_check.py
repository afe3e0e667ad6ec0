"""The measurements of the GPU acceptance check (scripts/gpu_check.sh runs this after installing).

For the demo model and EfficientNet-Lite0: calibrate (onnxruntime, --provider cuda by default),
quantize, build an INT8 engine and an INT8 engine with FP16 elsewhere, run each engine on the
evaluation data (`qtool run`), compare each engine with the ONNX Q/DQ model in onnxruntime
(`qtool compare`), and time both on one batch. Prints one table:

    model  engine  INT8 layers  top-1 agreement  SQNR  engine ms/batch  ONNX ms/batch

Every step goes through the `qtool` command, as a user would run it; the JSON each prints is
where the figures come from. The FP16 build must keep every INT8 layer of the INT8 build.

    python scripts/gpu_check.py [--out DIR] [--models demo,efficientnet_lite0] [--provider cuda]
    python scripts/gpu_check.py --dry-run     # no TensorRT: calibrate on the CPU, quantize,
                                              # time the ONNX model; engine columns pending

Exit status 1 when any step failed (the table says which), 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
QTOOL = [sys.executable, "-m", "qtool.cli.main"]
STEP_TIMEOUT = 300  # seconds; the whole check must stay under 8 minutes on one GPU
LATENCY_RUNS = 20


@dataclass
class Model:
    key: str
    path: Path
    calibrate: list            # data arguments of `qtool calibrate`
    compare: list              # data arguments of `qtool compare` / `qtool run`
    batch: int                 # engine batch (--batch) and timed batch size
    config: Path | None = None

    def available(self) -> str | None:
        missing = [str(p) for p in (self.path, self.config) if p is not None and not p.exists()]
        return f"missing {', '.join(missing)}" if missing else None


def models() -> dict[str, Model]:
    demo = REPO / "demo"
    assets = Path(os.environ.get("QTOOL_ASSETS", REPO.parent / "shared" / "assets"))
    images = assets / "imagenet200"
    config = REPO / "configs" / "imagenet_classifier.toml"
    return {
        "demo": Model("demo", demo / "digits_cnn.onnx",
                      ["--data", demo / "data" / "calib.npz", "--batch-size", "64"],
                      ["--data", demo / "data" / "test.npz", "--batch-size", "64"], 64),
        "efficientnet_lite0": Model(
            "efficientnet_lite0", assets / "efficientnet_lite0.onnx",
            ["--data", images, "--batch-size", "8", "--config", config],
            ["--data", images, "--batch-size", "32", "--config", config], 32, config),
    }


@dataclass
class Row:
    model: str
    engine: str
    int8_layers: str = "-"
    agreement: str = "-"
    sqnr: str = "-"
    engine_ms: str = "-"
    onnx_ms: str = "-"
    failures: list = field(default_factory=list)


def qtool(*args, expect=(0,)) -> dict:
    """Run `qtool ARGS --json`; its JSON result, or RuntimeError with its last error line."""
    command = [*QTOOL, *map(str, args), "--json"]
    print("  $ qtool " + " ".join(map(str, args)), flush=True)
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=STEP_TIMEOUT,
                          cwd=REPO)
    if done.returncode not in expect:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise RuntimeError(lines[-1] if lines else f"exit status {done.returncode}")
    return json.loads(done.stdout) if done.stdout.strip() else {}


def milliseconds_per_batch(run, feeds, runs: int = LATENCY_RUNS) -> float:
    """Median wall time of one batch after three warm-up runs."""
    for _ in range(3):
        run(feeds)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(feeds)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def timing_feeds(onnx_path: Path, batch: int) -> dict:
    from qtool.io.model import input_specs, load_model

    rng = np.random.default_rng(0)
    feeds = {}
    for spec in input_specs(load_model(onnx_path, load_weights=False)):
        shape = [batch if i == 0 else (d if isinstance(d, int) else 1) for i, d in enumerate(spec.shape)]
        feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
    return feeds


def onnx_latency(int8_onnx: Path, batch: int, provider: str, runs: int) -> float:
    from qtool.backends.onnxruntime.runner import OnnxRunner

    with OnnxRunner(int8_onnx, providers=provider) as runner:
        return milliseconds_per_batch(runner.run, timing_feeds(int8_onnx, batch), runs)


def engine_latency(engine: Path, int8_onnx: Path, batch: int) -> float:
    from qtool.backends.tensorrt.runtime import TensorRTRunner

    with TensorRTRunner(engine) as runner:
        return milliseconds_per_batch(runner.run, timing_feeds(int8_onnx, batch))


def check_model(model: Model, out: Path, provider: str, dry_run: bool) -> list[Row]:
    folder = out / model.key
    folder.mkdir(parents=True, exist_ok=True)
    calib = folder / f"{model.path.stem}.calib.json"
    int8 = folder / f"{model.path.stem}.int8.onnx"
    rows = [Row(model.key, "int8"), Row(model.key, "int8+fp16")]
    print(f"== {model.key}", flush=True)
    try:
        qtool("calibrate", model.path, *model.calibrate, "--provider", provider, "-o", calib)
        qtool("quantize", model.path, "--calib", calib, "-o", int8)
        # a dry run times a few batches only: the CPU is slow and the figure is not the point
        onnx_ms = f"{onnx_latency(int8, model.batch, provider, 2 if dry_run else LATENCY_RUNS):.2f}"
    except Exception as exc:  # the table records the failure; the other model still runs
        for row in rows:
            row.failures.append(f"calibrate/quantize: {exc}")
        return rows
    for row in rows:
        row.onnx_ms = onnx_ms
        if dry_run:
            row.int8_layers = row.agreement = row.sqnr = row.engine_ms = "pending (no GPU)"
            continue
        engine = folder / f"{model.path.stem}.{row.engine.replace('+', '_')}.engine"
        flags = ["--int8"] + (["--fp16"] if row.engine.endswith("fp16") else [])
        try:
            # no --shapes: the calibration beside the model sizes the profile, --batch the batch
            built = qtool("build", int8, *flags, "--batch", model.batch, "-o", engine)
            row.int8_layers = str(built["layers"]["quantized_layers"])
            qtool("run", engine, *model.compare, "-o", folder / f"{engine.stem}.outputs.npz")
            report = qtool("compare", int8, engine, *model.compare, "--task", "classification",
                           "--provider", provider, expect=(0, 3))
            row.agreement = f"{report['classification']['top1_agreement_percent']:.2f}%"
            sqnrs = [o["sqnr_db"] for o in report["outputs"].values() if o["sqnr_db"] is not None]
            row.sqnr = f"{min(sqnrs):.1f} dB" if sqnrs else "exact"
            row.engine_ms = f"{engine_latency(engine, int8, model.batch):.2f}"
            if not report["passed"]:
                row.failures.append("compare gate: " + "; ".join(
                    f"{g['metric']} {g['value']} vs {g['threshold']}"
                    for g in report["gates"] if not g["passed"]))
        except Exception as exc:
            row.failures.append(f"{row.engine}: {exc}")
    if not dry_run and rows[0].int8_layers != rows[1].int8_layers and not rows[1].failures:
        rows[1].failures.append(f"the FP16 build has {rows[1].int8_layers} INT8 layers, the INT8 "
                                f"build {rows[0].int8_layers}")
    return rows


def table(rows: list[Row]) -> str:
    header = ("model", "engine", "INT8 layers", "top-1 agreement", "SQNR", "engine ms/batch",
              "ONNX ms/batch", "status")
    cells = [header] + [(r.model, r.engine, r.int8_layers, r.agreement, r.sqnr, r.engine_ms,
                         r.onnx_ms, "FAILED: " + " | ".join(r.failures) if r.failures else "ok")
                        for r in rows]
    widths = [max(len(str(row[i])) for row in cells) for i in range(7)]
    lines = []
    for row in cells:
        lines.append("  ".join(str(v).ljust(w) for v, w in zip(row[:7], widths)) + "  " + row[7])
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "out" / "gpu_check")
    parser.add_argument("--models", default="demo,efficientnet_lite0")
    parser.add_argument("--provider", default="cuda", choices=("cpu", "cuda", "tensorrt", "auto"),
                        help="onnxruntime provider for calibrate, compare and ONNX timing")
    parser.add_argument("--dry-run", action="store_true",
                        help="stop before TensorRT: checks everything up to the GPU steps")
    args = parser.parse_args(argv)
    provider = "cpu" if args.dry_run else args.provider
    known = models()
    rows: list[Row] = []
    for key in args.models.split(","):
        if key not in known:
            parser.error(f"unknown model {key!r} (known: {', '.join(known)})")
        model = known[key]
        missing = model.available()
        if missing:
            rows += [Row(key, engine, failures=[missing]) for engine in ("int8", "int8+fp16")]
            continue
        rows += check_model(model, args.out, provider, args.dry_run)
    print()
    print(f"GPU check ({'dry run: no TensorRT' if args.dry_run else 'TensorRT'}; onnxruntime "
          f"provider {provider}; batch of {', '.join(f'{known[k].batch} ({k})' for k in args.models.split(','))})")
    print(table(rows))
    return 1 if any(row.failures for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
