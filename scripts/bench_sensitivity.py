"""Measure `qtool sensitivity` on EfficientNet-Lite0 with the 200 ImageNet photos of
../shared/assets: time to rank every quantized layer, and the fallback set that brings the
quantized model to a top-1 agreement target with FP32 (default 99.5% on all 200 photos).

    .venv/bin/python scripts/bench_sensitivity.py [--method percentile] [--samples 32]

Calibrates first (or reuses the calibration file in the output folder when it was made for the
same model and method), runs the same library calls as the command, prints a summary and writes
it to OUT/bench_sensitivity.json with the ranking and every fallback check.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from qtool.analysis.gates import Gates
from qtool.analysis.sensitivity import SensitivityOptions, measure_sensitivity
from qtool.calib.api import CalibrateOptions, calibrate
from qtool.calib.calibfile import read_calibration, write_calibration
from qtool.io.atomic import write_json
from qtool.io.model import model_sha256

ASSETS = Path(os.environ.get("QTOOL_ASSETS", REPO.parent / "shared" / "assets"))
PREPROCESS = {"resize": 256, "resize_filter": "bicubic", "crop": 224, "mean": 127.0,
              "std": 128.0, "color": "RGB", "layout": "NCHW"}


def calibration_for(model: Path, images: Path, method: str, out: Path) -> tuple[Path, float]:
    path = out / f"{model.stem}.{method}.calib.json"
    if path.is_file():
        existing = read_calibration(path)
        if existing.model_sha256 == model_sha256(model) and existing.method == method:
            return path, 0.0
    start = time.perf_counter()
    run = calibrate(model, images, CalibrateOptions(method=method, batch_size=32,
                                                    preprocess=PREPROCESS))
    write_calibration(run.calibration, path, run.histograms, run.means)
    return path, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ASSETS / "efficientnet_lite0.onnx")
    parser.add_argument("--images", type=Path, default=ASSETS / "imagenet200")
    parser.add_argument("--method", default="entropy")
    parser.add_argument("--samples", type=int, default=32, help="ranking sample")
    parser.add_argument("--agreement", type=float, default=99.5, help="fallback target, percent")
    parser.add_argument("--out", type=Path, default=REPO / "out" / "bench_sensitivity")
    args = parser.parse_args()
    if not args.model.is_file() or not args.images.is_dir():
        print(f"assets not found: {args.model}, {args.images}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)

    calib, calib_seconds = calibration_for(args.model, args.images, args.method, args.out)
    options = SensitivityOptions(num_samples=args.samples, batch_size=32, preprocess=PREPROCESS,
                                 task="classification",
                                 labels=str(args.images / "labels.txt"),
                                 target=Gates(min_agreement=args.agreement))
    started = time.perf_counter()
    checks = []

    def on_step(step):
        checks.append(step)
        verdict = "pass" if step.passed else "fail"
        print(f"  {step.phase:<8} {len(step.excluded):3d} layers in FP32: {verdict:<4} "
              f"agreement {step.metrics.get('top1_agreement_percent', float('nan')):6.2f}% "
              f"[{time.perf_counter() - started:6.1f}s]", flush=True)

    def on_layer(done, total, name):
        if done % 10 == 0 or done == total:
            print(f"  ranked {done}/{total} layers [{time.perf_counter() - started:6.1f}s]",
                  flush=True)

    result = measure_sensitivity(args.model, calib, args.images, options, on_layer=on_layer,
                                 on_step=on_step)
    record = _record(args, result, calib_seconds)
    write_json(args.out / "bench_sensitivity.json", record)
    _print_summary(args, result)
    return 0 if result.fallback.passed else 3


def _record(args, result, calib_seconds: float) -> dict:
    """What bench_sensitivity.json holds: the machine, the times, the ranking and the fallback."""
    fallback = result.fallback
    return {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "model": str(args.model), "method": args.method,
        "calibration_seconds": round(calib_seconds, 2),
        "layers": len(result.layers), "ranking_samples": result.samples,
        "ranking_seconds": round(result.seconds["ranking"], 2),
        "per_layer_seconds": round(result.seconds["per_layer"], 3),
        "fallback_seconds": round(result.seconds["fallback"], 2),
        "total_seconds": round(result.seconds["total"], 2),
        "all_quantized_on_sample": result.all_quantized.summary(),
        "eval_samples": result.eval_samples, "fp32_top1_percent": result.eval_fp32_top1,
        "target_agreement_percent": args.agreement,
        "fallback": fallback.to_dict(),
        "ranking": [layer.to_dict() for layer in result.layers],
    }


def _print_summary(args, result) -> None:
    fallback = result.fallback
    baseline = fallback.steps[0].metrics
    print(f"\n{len(result.layers)} layers ranked on {result.samples} samples in "
          f"{result.seconds['ranking']:.1f}s ({result.seconds['per_layer']:.2f}s per layer); "
          f"setup {result.seconds['setup']:.1f}s")
    print(f"fully quantized on {result.eval_samples} photos: "
          + (baseline["failed"] if "failed" in baseline else
             f"agreement {baseline['top1_agreement_percent']:.2f}%"))
    final = fallback.final.metrics
    print(f"fallback: {len(fallback.excluded)} of {len(result.layers)} layers in FP32 -> agreement "
          f"{final['top1_agreement_percent']:.2f}%, top-1 {final.get('top1_percent', 0):.2f}% "
          f"(FP32 {result.eval_fp32_top1:.2f}%), {fallback.checks} checks in "
          f"{result.seconds['fallback']:.1f}s")
    print(f"total {result.seconds['total']:.1f}s; wrote {args.out / 'bench_sensitivity.json'}")


if __name__ == "__main__":
    sys.exit(main())
