#!/usr/bin/env python3
"""INT8 accuracy of calibrate -> quantize on EfficientNet-Lite0 and the 200 ImageNet photos of
../shared/assets, per threshold method, with and without bias correction.

Two protocols, both evaluated with onnxruntime CPU against the FP32 model:
  all 200    calibrate on the 200 photos, evaluate on the same 200;
  held-out   calibrate on the 100 even-position photos (sorted by name), evaluate on the 100
             odd-position ones.
For each: top-1 agreement with FP32, top-1 against the labels, and the logit SQNR
10*log10(sum ref^2 / sum (int8 - ref)^2), a steadier measure than agreement: on these photos
several FP32 top-1 margins are below 0.1 logits, so a single flipped photo moves agreement
by 0.5 points. To show how much agreement such near-ties leave to chance, the script first adds
Gaussian noise of a given SQNR to the FP32 logits (400 draws per level) and prints how many
photos flip on average and how often agreement stays at 99% or more.

    .venv/bin/python scripts/bench_accuracy.py [--methods entropy,max] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from qtool.backends.onnxruntime.runner import OnnxRunner
from qtool.calib.api import CalibrateOptions, calibrate
from qtool.calib.calibfile import read_calibration, write_calibration
from qtool.io.data import open_data
from qtool.io.labels import read_labels
from qtool.io.model import input_specs, load_model
from qtool.quantize.api import quantize_model
from qtool.quantize.options import QuantizeOptions

ASSETS = Path(os.environ.get("QTOOL_ASSETS", REPO.parent / "shared" / "assets"))
PREPROCESS = {"resize": 256, "resize_filter": "bicubic", "crop": 224, "mean": 127.0,
              "std": 128.0, "color": "RGB", "layout": "NCHW"}


def image_subset(images: Path, keep, folder: Path) -> Path:
    """A folder holding the photos of `images` (sorted by name) whose position passes `keep`."""
    photos = sorted(p for p in images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    folder.mkdir()
    for index, photo in enumerate(photos):
        if keep(index):
            os.link(photo, folder / photo.name)
    return folder


def logits(model, batches) -> np.ndarray:
    with OnnxRunner(model) as runner:
        first = runner.output_names[0]
        return np.concatenate([runner.run(feeds)[first] for feeds in batches])


def sqnr_db(reference: np.ndarray, other: np.ndarray) -> float:
    noise = float(np.sum((other.astype(np.float64) - reference) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.sum(reference ** 2.0)) / noise)


def noise_flips(reference: np.ndarray, levels_db=(20, 22, 24, 26, 28, 30), draws: int = 400,
                seed: int = 0) -> list[tuple[float, float, float]]:
    """(SQNR dB, mean flips, share of draws agreeing on >= 99%) for Gaussian logit noise."""
    rng = np.random.default_rng(seed)
    power = float(np.mean(reference.astype(np.float64) ** 2))
    top1 = reference.argmax(1)
    rows = []
    for level in levels_db:
        sigma = np.sqrt(power / 10 ** (level / 10))
        flips = np.array([np.sum((reference + rng.normal(0, sigma, reference.shape)).argmax(1) != top1)
                          for _ in range(draws)])
        rows.append((level, float(flips.mean()), float(np.mean(flips <= 0.01 * len(reference)))))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ASSETS / "efficientnet_lite0.onnx")
    parser.add_argument("--images", type=Path, default=ASSETS / "imagenet200")
    parser.add_argument("--methods", default="entropy,max,percentile,mse")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    if not args.model.is_file():
        sys.exit(f"model not found: {args.model} (see ../shared/assets/README.md)")
    model = load_model(args.model)
    source = open_data(args.images, input_specs(model), preprocess=PREPROCESS, batch_size=50)
    batches = list(source)
    labels = read_labels(args.images / "labels.txt", source)
    reference = logits(model, batches)
    ref_top1 = reference.argmax(1)
    odd = np.arange(len(reference)) % 2 == 1
    print(f"{args.model.name}: FP32 top-1 {np.mean(ref_top1 == labels):.1%} on "
          f"{len(reference)} photos ({np.mean(ref_top1[odd] == labels[odd]):.1%} on the odd half)")
    ordered = np.sort(reference, axis=1)
    margins = ordered[:, -1] - ordered[:, -2]
    print(f"FP32 top-1 margins under 0.1 / 0.2 / 0.5 logits: {np.sum(margins < 0.1)} / "
          f"{np.sum(margins < 0.2)} / {np.sum(margins < 0.5)} photos")
    for level, flips, share in noise_flips(reference):
        print(f"  Gaussian logit noise at {level} dB: {flips:.2f} photos flip on average, "
              f"agreement >= 99% in {share:.0%} of draws")
    print(f"{'protocol':<10}{'method':<12}{'bias corr':<11}{'agreement':>10}{'top-1':>8}"
          f"{'SQNR dB':>9}{'flips':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        even = image_subset(args.images, lambda i: i % 2 == 0, Path(tmp) / "even")
        for protocol, calib_images, rows in (("all 200", args.images, np.ones_like(odd)),
                                             ("held-out", even, odd)):
            for method in args.methods.split(","):
                options = CalibrateOptions(method=method, batch_size=args.batch_size,
                                           preprocess=PREPROCESS)
                result = calibrate(args.model, calib_images, options)
                path = Path(tmp) / f"{protocol[:3]}.{method}.json"
                write_calibration(result.calibration, path, result.histograms, result.means)
                calibration = read_calibration(path)
                for correct in (True, False):
                    quantized, _ = quantize_model(
                        model, calibration.amax, QuantizeOptions(bias_correction=correct),
                        channel_means=calibration.load_channel_means() if correct else None)
                    out = logits(quantized, batches)[rows]
                    top1 = out.argmax(1)
                    agree = np.mean(top1 == ref_top1[rows])
                    print(f"{protocol:<10}{method:<12}{'on' if correct else 'off':<11}"
                          f"{agree:>10.1%}{np.mean(top1 == labels[rows]):>8.1%}"
                          f"{sqnr_db(reference[rows], out):>9.2f}"
                          f"{int(np.sum(top1 != ref_top1[rows])):>7}", flush=True)


if __name__ == "__main__":
    main()
