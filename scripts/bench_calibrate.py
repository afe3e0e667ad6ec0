#!/usr/bin/env python3
"""Calibration speed and memory against plain onnxruntime inference, measured in one run.

For each sample count, two fresh subprocesses run over the same images with the same
preprocessing and batch size: (1) plain onnxruntime inference, (2) `qtool calibrate` (histograms
of every observed tensor + entropy thresholds + writing the calibration file). Each reports its
wall time and peak RSS; the table shows calibration time as a ratio to (1) and how peak memory
grows with the number of samples (images are repeated to reach counts above what is on disk).
With --repeat N the pair runs N times, alternating, and the table shows the medians: on a
shared 2-core machine single runs of either vary by 10-20%.

    python scripts/bench_calibrate.py                       # EfficientNet-Lite0, 200 ImageNet images
    python scripts/bench_calibrate.py --samples 100,200,1000 --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ASSETS = REPO.parent / "shared" / "assets"
IMAGENET_PREPROCESS = {"resize": 256, "resize_filter": "bicubic", "crop": 224, "color": "RGB",
                       "mean": [127.0, 127.0, 127.0], "std": [128.0, 128.0, 128.0], "layout": "NCHW"}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker(args) -> None:
    sys.path.insert(0, str(REPO))
    from qtool.io.data import open_data
    from qtool.io.model import input_specs, load_model

    start = time.perf_counter()
    if args.worker == "infer":
        import onnxruntime as ort

        model = load_model(args.model)
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        source = open_data(args.images, input_specs(model), preprocess=IMAGENET_PREPROCESS,
                           batch_size=args.batch_size)
        samples = 0
        for feeds in source:
            session.run(None, feeds)
            samples += next(iter(feeds.values())).shape[0]
    else:
        from qtool.calib.calibfile import write_calibration
        from qtool.calibrate import CalibrateOptions, calibrate

        options = CalibrateOptions(method=args.method, batch_size=args.batch_size,
                                   preprocess=IMAGENET_PREPROCESS)
        result = calibrate(args.model, args.images, options)
        with tempfile.TemporaryDirectory() as tmp:
            write_calibration(result.calibration, Path(tmp) / "c.json", result.histograms, result.means)
        samples = result.calibration.num_samples
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "samples": samples, "peak_rss_mb": peak_rss_mb()}))


def image_folder(source: Path, count: int, tmp: Path) -> Path:
    """A folder of `count` images, repeating the source images as hard links (or copies)."""
    images = sorted(p for p in source.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    folder = tmp / f"images_{count}"
    folder.mkdir()
    for index in range(count):
        src = images[index % len(images)]
        dst = folder / f"{index:05d}{src.suffix}"
        try:
            os.link(src, dst)
        except OSError:
            dst.write_bytes(src.read_bytes())
    return folder


def measure(kind: str, args, images: Path) -> dict:
    command = [sys.executable, __file__, "--worker", kind, "--model", str(args.model),
               "--images", str(images), "--batch-size", str(args.batch_size), "--method", args.method]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def median_run(runs: list[dict]) -> dict:
    """The median of each measured figure over repeated runs."""
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ASSETS / "efficientnet_lite0.onnx")
    parser.add_argument("--images", type=Path, default=ASSETS / "imagenet200")
    parser.add_argument("--samples", default="200", help="comma-separated sample counts")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--method", default="entropy")
    parser.add_argument("--repeat", type=int, default=1, help="runs per pair (medians shown)")
    parser.add_argument("--worker", choices=["infer", "calibrate"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if not args.model.is_file() or not args.images.is_dir():
        sys.exit(f"need {args.model} and {args.images} (see ../shared/assets or scripts/fetch_models.sh)")

    print(f"model {args.model.name}, batch size {args.batch_size}, method {args.method}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"{'samples':>8} {'infer s':>8} {'calib s':>8} {'ratio':>6} {'infer RSS MB':>13} {'calib RSS MB':>13}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="qtool-bench-") as tmp:
        for count in (int(n) for n in args.samples.split(",")):
            images = image_folder(args.images, count, Path(tmp))
            runs = [(measure("infer", args, images), measure("calibrate", args, images))
                    for _ in range(max(1, args.repeat))]
            infer, calib = (median_run([pair[k] for pair in runs]) for k in (0, 1))
            ratio = calib["seconds"] / infer["seconds"]
            rows.append((count, infer, calib, ratio))
            print(f"{count:>8} {infer['seconds']:>8.2f} {calib['seconds']:>8.2f} {ratio:>6.2f} "
                  f"{infer['peak_rss_mb']:>13.0f} {calib['peak_rss_mb']:>13.0f}", flush=True)
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        growth = last[2]["peak_rss_mb"] / first[2]["peak_rss_mb"]
        print(f"calibration peak RSS at {last[0]} samples / at {first[0]} samples: {growth:.3f}")


if __name__ == "__main__":
    main()
