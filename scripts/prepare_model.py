#!/usr/bin/env python3
"""Rewrite an FP32 model's constants before calibration: cross-layer equalization and/or
SmoothQuant (qtool.quantize.equalize, qtool.quantize.smooth). The graph stays as it is.

    .venv/bin/python scripts/prepare_model.py MODEL -o OUT --equalize
    .venv/bin/python scripts/prepare_model.py MODEL -o OUT --smooth --data DIR [--alpha 0.5]

Equalization runs first when both are given (SmoothQuant then measures the equalized model).
--data is anything qtool reads as model input data (a folder of .npz files keyed by input name,
say); SmoothQuant measures per-channel activation maxima on it. Then calibrate OUT as usual.
--check-data runs MODEL and OUT on that data and prints the largest output difference. A JSON
report goes to stdout (--report writes it to a file too); OUT is written atomically.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from qtool.errors import QtoolError
from qtool.io.data import open_data
from qtool.io.model import input_specs, load_model, save_model
from qtool.quantize.equalize import equalize_model
from qtool.quantize.smooth import smooth_with_data


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--equalize", action="store_true", help="cross-layer equalization")
    parser.add_argument("--iterations", type=int, default=20, help="equalization sweeps at most")
    parser.add_argument("--smooth", action="store_true", help="SmoothQuant (needs --data)")
    parser.add_argument("--data", type=Path, help="model input data for --smooth/--check-data")
    parser.add_argument("--alpha", type=float, default=0.5, help="SmoothQuant migration strength")
    parser.add_argument("--max-scale", type=float, default=1e3,
                        help="largest per-channel scale either rewrite may apply")
    parser.add_argument("--num-samples", type=int, help="use at most this many samples")
    parser.add_argument("--check-data", action="store_true",
                        help="compare MODEL and OUT outputs on --data")
    parser.add_argument("--report", type=Path, help="also write the JSON report here")
    args = parser.parse_args(argv)
    if not (args.equalize or args.smooth):
        parser.error("nothing to do: give --equalize and/or --smooth")
    if (args.smooth or args.check_data) and args.data is None:
        parser.error("--smooth and --check-data need --data")
    if args.output.resolve() == args.model.resolve():
        parser.error("the output must not overwrite the model")
    return args


def output_difference(before, after, data) -> dict:
    from qtool.backends.onnxruntime.runner import OnnxRunner

    worst, peak = 0.0, 0.0
    with OnnxRunner(before) as a, OnnxRunner(after) as b:
        for feeds in data:
            got = b.run(feeds)
            for name, want in a.run(feeds).items():
                worst = max(worst, float(np.max(np.abs(got[name] - want), initial=0.0)))
                peak = max(peak, float(np.max(np.abs(want), initial=0.0)))
    return {"max_abs_diff": worst, "max_abs_output": peak}


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        original = load_model(args.model)
        model = original
        report: dict = {"model": str(args.model), "output": str(args.output)}
        data = None
        if args.data is not None:
            data = open_data(args.data, input_specs(original), num_samples=args.num_samples)
        if args.equalize:
            model, equalization = equalize_model(model, iterations=args.iterations,
                                                 max_scale=args.max_scale)
            report["equalize"] = equalization.to_dict()
            print(f"equalize: {len(equalization.pairs)} pairs, {equalization.iterations} sweeps, "
                  f"skipped {equalization.skipped_by_reason()}", file=sys.stderr)
        if args.smooth:
            model, smoothing = smooth_with_data(model, data, alpha=args.alpha,
                                                max_scale=args.max_scale)
            report["smooth"] = smoothing.to_dict()
            print(f"smooth: {len(smoothing.smoothed)} activations, "
                  f"skipped {smoothing.skipped_by_reason()}", file=sys.stderr)
        if args.check_data:
            report["check"] = output_difference(original, model, data)
        save_model(model, args.output)
    except QtoolError as exc:
        print(f"prepare_model: {exc}", file=sys.stderr)
        return 1
    text = json.dumps(report, indent=2)
    print(text)
    if args.report is not None:
        args.report.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
