#!/usr/bin/env python3
"""The child processes of scripts/bench.py, one job each, so each is measured on its own.

    bench_workers.py infer --model M --data D [--preprocess JSON] [--batch-size N]
        plain onnxruntime CPU inference over the data (the floor for any calibration)
    bench_workers.py ort --model M --data D --method Entropy|Percentile|MinMax --output OUT ...
        onnxruntime.quantization.quantize_static: QDQ, per-channel, symmetric INT8 activations and
        weights, reading the data through the same reader qtool uses
    bench_workers.py eval --spec SPEC.json
        outputs of the FP32 model and each quantized model on held-out data -> metrics (JSON)

Each prints one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

ORT_METHODS = ("Entropy", "Percentile", "MinMax")


def open_source(model_path: str, data: str, preprocess: dict | None, batch_size: int):
    from qtool.io.data import open_data
    from qtool.io.model import input_specs, load_model

    specs = input_specs(load_model(model_path))
    return open_data(data, specs, preprocess=preprocess or None, batch_size=batch_size)


def session(model_path: str):
    import onnxruntime as ort

    return ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])


def run_infer(args) -> dict:
    start = time.perf_counter()
    sess = session(args.model)
    samples = 0
    for feeds in open_source(args.model, args.data, args.preprocess, args.batch_size):
        sess.run(None, feeds)
        samples += len(next(iter(feeds.values())))
    return {"samples": samples, "seconds_inside": time.perf_counter() - start}


def run_ort(args) -> dict:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        """Feeds the calibration batches once, as onnxruntime's calibrators expect."""

        def __init__(self, source):
            self.samples = 0
            self._batches = iter(source)

        def get_next(self):
            feeds = next(self._batches, None)
            if feeds is not None:
                self.samples += len(next(iter(feeds.values())))
            return feeds

    start = time.perf_counter()
    reader = Reader(open_source(args.model, args.data, args.preprocess, args.batch_size))
    quantize_static(
        args.model, args.output, reader,
        quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
        calibrate_method=getattr(CalibrationMethod, args.method),
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )
    return {"samples": reader.samples, "seconds_inside": time.perf_counter() - start}


def outputs(model_path: str, source) -> np.ndarray:
    sess = session(model_path)
    return np.concatenate([sess.run(None, feeds)[0] for feeds in source])


def run_eval(args) -> dict:
    import bench_metrics as m
    from bench_data import original_name

    spec = json.loads(Path(args.spec).read_text())
    source = open_source(spec["fp32"], spec["data"], spec.get("preprocess"), spec["batch_size"])
    reference = outputs(spec["fp32"], source)
    task = spec["task"]
    results: dict[str, dict] = {}
    if task == "classify":
        names = [original_name(p) for p in source.sample_files()]
        labels = np.array([spec["labels"][n] for n in names])
        heldout = np.array([n in set(spec["heldout"]) for n in names])
        results["fp32"] = {"top1": m.top1_accuracy(reference[heldout], labels[heldout])}
    for label, path in spec["models"].items():
        if path is None:
            continue
        out = outputs(path, source)
        if task == "classify":
            results[label] = {
                "top1": m.top1_accuracy(out[heldout], labels[heldout]),
                "agree": m.top1_agreement(reference[heldout], out[heldout]),
                "agree_all": m.top1_agreement(reference, out),
            }
            continue
        metrics = {"sqnr": m.sqnr_db(reference, out), "cosine": m.mean_cosine(reference, out)}
        if task == "detect":
            metrics["mask_iou"] = m.mask_iou(reference, out, spec["det_thresh"])
        elif task == "recognize":
            metrics["text_agree"] = m.text_agreement(reference, out)
        elif task == "direction":
            metrics["agree"] = m.top1_agreement(reference, out)
        results[label] = metrics
    return {"samples": len(reference), "metrics": results}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job", choices=["infer", "ort", "eval"])
    parser.add_argument("--model")
    parser.add_argument("--data")
    parser.add_argument("--preprocess", type=json.loads, default=None, help="JSON object")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--method", choices=ORT_METHODS)
    parser.add_argument("--output")
    parser.add_argument("--spec")
    args = parser.parse_args(argv)
    job = {"infer": run_infer, "ort": run_ort, "eval": run_eval}[args.job]
    print(json.dumps(job(args)), flush=True)


if __name__ == "__main__":
    main()
