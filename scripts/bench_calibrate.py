#!/usr/bin/env python3
"""Calibration speed and memory against plain onnxruntime inference, measured in one run.

Two fresh subprocesses run over the same data with the same reader and batch size: (1) plain
onnxruntime inference, (2) `qtool calibrate` (the collection pass with the given method, its
thresholds, and writing the calibration file). Each reports its wall time and peak RSS; the
table shows calibration as a ratio to (1). With method auto (the default) the calibrate process
also reports where its collection ended (time and peak RSS just before auto's threshold scoring),
so the table shows the collection and the whole call, and the scoring costs their difference.
With --repeat N the pair runs N times, alternating, and the table shows the medians: on a shared
2-core machine single runs vary by 10-20%.

    python scripts/bench_calibrate.py                       # EfficientNet-Lite0, 200 ImageNet images
    python scripts/bench_calibrate.py --samples 100,200,1000 --repeat 5 --method entropy
    python scripts/bench_calibrate.py --matrix all --repeat 3   # every accuracy-matrix model

--matrix takes keys of scripts/matrix_models.py (or `all`): each model with its prepared
calibration split (out/matrix/data/KEY/calib, `matrix_models.py prepare`) and the matrix's batch
size, plus `ppocrv6_det_640`: PP-OCRv6 small detection at 640x640 on 33 ImageNet photos in
batches of 4 (images resized by qtool's [preprocess] reader, as PP-OCR normalises them).
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
MATRIX_DATA = REPO / "out" / "matrix" / "data"
IMAGENET_PREPROCESS = {"resize": 256, "resize_filter": "bicubic", "crop": 224, "color": "RGB",
                       "mean": [127.0, 127.0, 127.0], "std": [128.0, 128.0, 128.0], "layout": "NCHW"}
# PP-OCR detection at 640x640: BGR, (pixel / 255 - 0.5) / 0.5
DET640_PREPROCESS = {"resize": [640, 640], "color": "BGR", "mean": [127.5] * 3,
                     "std": [127.5] * 3, "layout": "NCHW"}
DET640 = "ppocrv6_det_640"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker(args) -> None:
    sys.path.insert(0, str(REPO))
    from qtool.io.data import open_data
    from qtool.io.model import input_specs, load_model

    start = time.perf_counter()
    preprocess = json.loads(args.preprocess) if args.preprocess else None
    batch_size = args.batch_size or None
    report = {}
    if args.worker == "infer":
        import onnxruntime as ort

        model = load_model(args.model)
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        source = open_data(args.data, input_specs(model), preprocess=preprocess,
                           batch_size=batch_size)
        samples = 0
        for feeds in source:
            session.run(None, feeds)
            samples += 1
        report["batches"] = samples
    else:
        import qtool.calib.api as calibrate_module
        from qtool.calib.calibfile import write_calibration

        # where the collection ends and auto's scoring starts: time and peak so far
        choose_auto = calibrate_module.choose_auto

        def timed_choose_auto(*a, **k):
            report.update(collect_seconds=time.perf_counter() - start, collect_rss_mb=peak_rss_mb())
            return choose_auto(*a, **k)

        calibrate_module.choose_auto = timed_choose_auto
        options = calibrate_module.CalibrateOptions(method=args.method, batch_size=batch_size,
                                                    preprocess=preprocess or {})
        result = calibrate_module.calibrate(args.model, args.data, options)
        with tempfile.TemporaryDirectory() as tmp:
            write_calibration(result.calibration, Path(tmp) / "c.json", result.histograms, result.means)
        report["samples"] = result.calibration.num_samples
    report.update(seconds=time.perf_counter() - start, peak_rss_mb=peak_rss_mb())
    report.setdefault("collect_seconds", report["seconds"])
    report.setdefault("collect_rss_mb", report["peak_rss_mb"])
    print(json.dumps(report))


def image_folder(source: Path, count: int, tmp: Path) -> Path:
    """A folder of `count` images, repeating the source images as hard links (or copies)."""
    images = sorted(p for p in source.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    folder = tmp / f"images_{count}"
    if folder.is_dir():
        return folder
    folder.mkdir()
    for index in range(count):
        src = images[index % len(images)]
        dst = folder / f"{index:05d}{src.suffix}"
        try:
            os.link(src, dst)
        except OSError:
            dst.write_bytes(src.read_bytes())
    return folder


def measure(kind: str, case: dict, method: str) -> dict:
    command = [sys.executable, __file__, "--worker", kind, "--model", str(case["model"]),
               "--data", str(case["data"]), "--method", method,
               "--batch-size", str(case.get("batch_size") or 0)]  # 0: each file is a batch
    if case.get("preprocess"):
        command += ["--preprocess", json.dumps(case["preprocess"])]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def median_run(runs: list[dict]) -> dict:
    """The median of each measured figure over repeated runs."""
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def ready_keys() -> dict[str, int]:
    """Matrix keys whose data preparation finished, from /tmp/prep/done ("KEY STATUS" lines)
    when present, else every key with a calibration folder."""
    done = Path("/tmp/prep/done")
    if done.is_file():
        lines = (line.split() for line in done.read_text().splitlines())
        return {parts[0]: int(parts[1]) for parts in lines if len(parts) == 2}
    return {path.name: 0 for path in MATRIX_DATA.iterdir() if (path / "calib").is_dir()}


def matrix_cases(keys: str, tmp: Path) -> list[dict]:
    sys.path.insert(0, str(REPO / "scripts"))
    import matrix_models

    wanted = [*matrix_models.SPECS, DET640] if keys == "all" else keys.split(",")
    ready = ready_keys()
    cases = []
    for key in wanted:
        if key == DET640:
            cases.append({"name": key, "model": matrix_models.MODELS / "ppocrv6_det.onnx",
                          "data": image_folder(ASSETS / "imagenet200", 33, tmp), "batch_size": 4,
                          "preprocess": DET640_PREPROCESS})
            continue
        spec = matrix_models.SPECS.get(key)
        if spec is None:
            sys.exit(f"unknown matrix key {key!r}; choose from {', '.join(matrix_models.SPECS)}, {DET640}")
        data = MATRIX_DATA / key / "calib"
        model = (ASSETS / "efficientnet_lite0.onnx" if key == "efficientnet_lite0"
                 else matrix_models.MODELS / f"{key}.onnx")
        if ready.get(key, 1) != 0 or not data.is_dir() or not model.is_file():
            print(f"{key}: skipped (no prepared data or model; see matrix_models.py prepare)")
            continue
        cases.append({"name": key, "model": model, "data": data, "batch_size": spec.batch_size})
    return cases


def run_cases(cases: list[dict], method: str, repeat: int) -> list[tuple]:
    rows = []
    for case in cases:
        runs = []
        for _ in range(max(1, repeat)):
            try:
                runs.append((measure("infer", case, method), measure("calibrate", case, method)))
            except subprocess.CalledProcessError as exc:
                print(f"{case['name']}: failed: {(exc.stderr or '').strip().splitlines()[-1:]}")
                break
        if not runs:
            continue
        infer, calib = (median_run([pair[k] for pair in runs]) for k in (0, 1))
        rows.append((case, infer, calib, len(runs)))
        print_row(case["name"], infer, calib, method, flush=True)
    return rows


def print_header(method: str) -> None:
    extra = f" {'collect s':>9} {'x':>5} {'collect MB':>10} {'x':>5}" if method == "auto" else ""
    print(f"{'case':<20} {'infer s':>8} {'calib s':>8} {'x':>5} {'infer MB':>9} {'calib MB':>9} "
          f"{'x':>5}{extra}")


def print_row(name: str, infer: dict, calib: dict, method: str, flush: bool = False) -> None:
    line = (f"{name:<20} {infer['seconds']:>8.2f} {calib['seconds']:>8.2f} "
            f"{calib['seconds'] / infer['seconds']:>5.2f} {infer['peak_rss_mb']:>9.0f} "
            f"{calib['peak_rss_mb']:>9.0f} {calib['peak_rss_mb'] / infer['peak_rss_mb']:>5.2f}")
    if method == "auto":
        line += (f" {calib['collect_seconds']:>9.2f} {calib['collect_seconds'] / infer['seconds']:>5.2f}"
                 f" {calib['collect_rss_mb']:>10.0f} {calib['collect_rss_mb'] / infer['peak_rss_mb']:>5.2f}")
    print(line, flush=flush)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ASSETS / "efficientnet_lite0.onnx")
    parser.add_argument("--images", "--data", dest="data", type=Path, default=ASSETS / "imagenet200")
    parser.add_argument("--samples", default="200", help="comma-separated sample counts (images)")
    parser.add_argument("--batch-size", type=int, default=8, help="0: each data file is a batch")
    parser.add_argument("--method", default="auto", help="calibration method (default: qtool's)")
    parser.add_argument("--matrix", help="comma-separated matrix keys, or all (see above)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per pair (medians shown)")
    parser.add_argument("--json", type=Path, help="also write every median figure here")
    parser.add_argument("--worker", choices=["infer", "calibrate"], help=argparse.SUPPRESS)
    parser.add_argument("--preprocess", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    print(f"method {args.method}, {args.repeat} alternating run(s) per pair, medians; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, load {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="qtool-bench-") as tmp:
        if args.matrix:
            cases = matrix_cases(args.matrix, Path(tmp))
        else:
            if not args.model.is_file() or not args.data.is_dir():
                sys.exit(f"need {args.model} and {args.data} (see ../shared/assets or scripts/fetch_models.sh)")
            cases = [{"name": f"{args.model.stem} {count}", "model": args.model,
                      "data": image_folder(args.data, count, Path(tmp)),
                      "batch_size": args.batch_size, "preprocess": IMAGENET_PREPROCESS}
                     for count in (int(n) for n in args.samples.split(","))]
        print_header(args.method)
        rows = run_cases(cases, args.method, args.repeat)
    print(f"load after: {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps([{"case": case["name"], "runs": runs, "infer": infer,
                                          "calibrate": calib} for case, infer, calib, runs in rows],
                                        indent=1))


if __name__ == "__main__":
    main()
