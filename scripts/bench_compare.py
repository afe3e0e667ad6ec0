#!/usr/bin/env python3
"""`qtool compare` against plain onnxruntime inference of both models: wall time and peak RSS,
measured side by side in one run, on a text recognizer and a text detector of the accuracy
matrix (scripts/matrix_models.py; their data in out/matrix/data, models in models/matrix).

For each model the INT8 candidate is made once with `qtool calibrate` + `qtool quantize` on the
calibration split (kept in --out). Then, for every data layout and batch size, two fresh child
processes (scripts/bench_measure.py: exact per-child peak RSS) run over the same evaluation
samples in the same batches:

  plain    onnxruntime sessions of both models, every batch through both, outputs dropped
           (with qtool's session settings: idle threads do not spin, which on a busy machine
           would make the plain run the slower one)
  compare  `qtool compare` with the task metric: greedy CTC (--ctc-blank 0) for a recognizer,
           examples/metrics/db_box_f1.py for a DB detector, and the JSON report

With --repeat N each pair runs N times, alternating, and the table shows the medians: on a
shared 2-core machine single runs vary by 20-50% in time (peak RSS barely moves).

Data layouts: `folder` (the evaluation split as it is, one .npz per sample) and `one-npz` (the
same samples stacked into a single .npz file, as a user exports them: read as one batch unless
a batch size is given).

    python scripts/bench_compare.py                          # ppocrv4_rec and ppocrv6_det
    python scripts/bench_compare.py --models ppocrv6_rec --batch-sizes 8,none
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from bench_measure import Measured, run_measured

MODELS = REPO / "models" / "matrix"
DATA = REPO / "out" / "matrix" / "data"
DB_METRIC = REPO / "examples" / "metrics" / "db_box_f1.py"
# key -> the task arguments compare gets
TASKS = {"ppocrv4_rec": ["--ctc-blank", "0"], "ppocrv6_rec": ["--ctc-blank", "0"],
         "ppocrv4_det": ["--metric-script", str(DB_METRIC)],
         "ppocrv6_det": ["--metric-script", str(DB_METRIC)]}
QTOOL = [sys.executable, "-m", "qtool"]


def plain_batches(data: Path, batch_size: int | None):
    """Feeds per .npz file, or re-batched to `batch_size` across files, as compare batches."""
    import numpy as np

    files = sorted(data.glob("*.npz")) if data.is_dir() else [data]
    held, count = [], 0
    for file in files:
        with np.load(file) as arrays:
            feeds = {name: arrays[name] for name in arrays.files}
        if batch_size is None:
            yield feeds
            continue
        held.append(feeds)
        count += len(next(iter(feeds.values())))
        while count >= batch_size:
            joined = {name: np.concatenate([f[name] for f in held]) for name in feeds}
            yield {name: array[:batch_size] for name, array in joined.items()}
            held, count = [{name: array[batch_size:] for name, array in joined.items()}], \
                count - batch_size
    if count:
        yield {name: np.concatenate([f[name] for f in held]) for name in held[0]}


def plain_worker(reference: str, candidate: str, data: str, batch_size: int | None) -> None:
    """Both models through onnxruntime on the batches compare would make; prints JSON."""
    import onnxruntime as ort

    start = time.perf_counter()
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sessions = [ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
                for path in (reference, candidate)]
    samples = batches = 0
    for feeds in plain_batches(Path(data), batch_size):
        for session in sessions:
            session.run(None, feeds)
        samples += len(next(iter(feeds.values())))
        batches += 1
    print(json.dumps({"seconds": time.perf_counter() - start, "samples": samples,
                      "batches": batches}))


def candidate_for(key: str, out: Path) -> Path:
    """The INT8 model of `key`, calibrated (default method) on its calibration split once."""
    model = MODELS / f"{key}.onnx"
    int8 = out / f"{key}.int8.onnx"
    if int8.is_file():
        return int8
    calib = out / f"{key}.calib.json"
    subprocess.run([*QTOOL, "calibrate", str(model), "--data", str(DATA / key / "calib"),
                    "-o", str(calib), "-q"], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    subprocess.run([*QTOOL, "quantize", str(model), "--calib", str(calib), "-o", str(int8),
                    "-q"], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return int8


def stacked(key: str, out: Path) -> Path:
    """The evaluation split as one .npz file of all samples."""
    import numpy as np

    path = out / f"{key}.eval.npz"
    if not path.is_file():
        parts: dict[str, list] = {}
        for file in sorted((DATA / key / "eval").glob("*.npz")):
            with np.load(file) as arrays:
                for name in arrays.files:
                    parts.setdefault(name, []).append(arrays[name])
        np.savez(path, **{name: np.concatenate(arrays) for name, arrays in parts.items()})
    return path


def median_of(runs: list[Measured]) -> Measured:
    """The first failure, or a run with the median time and the median peak RSS."""
    failed = next((run for run in runs if not run.ok), None)
    if failed is not None:
        return failed
    return Measured(runs[0].status, statistics.median(run.seconds for run in runs),
                    statistics.median(run.peak_rss_mb for run in runs))


def measure_pair(key: str, reference: Path, candidate: Path, data: Path, batch_size: int | None,
                 out: Path, limits: dict, repeat: int = 1) -> tuple[Measured, Measured, dict]:
    runs = [measure_once(key, reference, candidate, data, batch_size, out, limits)
            for _ in range(max(1, repeat))]
    return median_of([r[0] for r in runs]), median_of([r[1] for r in runs]), runs[-1][2]


def measure_once(key: str, reference: Path, candidate: Path, data: Path,
                 batch_size: int | None, out: Path, limits: dict) -> tuple[Measured, Measured, dict]:
    size = [] if batch_size is None else ["--batch-size", str(batch_size)]
    plain = run_measured([sys.executable, __file__, "--plain", str(reference), str(candidate),
                          str(data), *size], cwd=str(REPO), **limits)
    report = out / f"{key}.compare.json"
    compare = run_measured([*QTOOL, "compare", str(reference), str(candidate), "--data",
                            str(data), *size, *TASKS[key], "-o", str(report), "-q"],
                           cwd=str(REPO), **limits)
    result = json.loads(report.read_text()) if compare.ok else {}
    return plain, compare, result


def task_figures(result: dict) -> str:
    if not result:
        return "-"
    seq = result.get("sequence")
    if seq and "ctc" in seq:
        ctc = seq["ctc"]
        return (f"same text {ctc['same_sequence_percent']:.1f}%, CER "
                f"{ctc['token_error_rate_percent']:.2f}%")
    metrics = result.get("metrics") or {}
    if "box_f1" in metrics:
        return f"box F1 {metrics['box_f1']:.3f}"
    return "-"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="ppocrv4_rec,ppocrv6_det",
                        help=f"comma-separated keys of: {', '.join(TASKS)}")
    parser.add_argument("--batch-sizes", default="none,8",
                        help="comma-separated batch sizes; none: as the files are")
    parser.add_argument("--layouts", default="folder,one-npz")
    parser.add_argument("--out", type=Path, default=REPO / "out" / "bench_compare")
    parser.add_argument("--repeat", type=int, default=1, help="runs per pair (medians shown)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per child")
    parser.add_argument("--mem-limit-mb", type=float, default=12000.0, help="per child")
    parser.add_argument("--plain", nargs=3, metavar=("REF", "CAND", "DATA"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.plain:
        plain_worker(*args.plain, args.batch_size)
        return 0
    keys = [key.strip() for key in args.models.split(",") if key.strip()]
    unknown = [key for key in keys if key not in TASKS]
    if unknown:
        parser.error(f"unknown model {', '.join(unknown)}; choose from {', '.join(TASKS)}")
    sizes = [None if s.strip() == "none" else int(s) for s in args.batch_sizes.split(",")]
    layouts = [layout.strip() for layout in args.layouts.split(",")]
    for key in keys:
        if not (MODELS / f"{key}.onnx").is_file() or not (DATA / key / "eval").is_dir():
            sys.exit(f"need {MODELS / key}.onnx and {DATA / key}/eval: run "
                     f"scripts/accuracy_matrix.py (or matrix_models.py prepare {key}) first")
    args.out.mkdir(parents=True, exist_ok=True)
    limits = {"timeout_s": args.timeout, "mem_limit_mb": args.mem_limit_mb}
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    print("| model | data | batch | plain s | compare s | plain RSS MB | compare RSS MB | "
          "RSS ratio | task metric |")
    print("|---|---|---|---:|---:|---:|---:|---:|---|")
    for key in keys:
        reference = MODELS / f"{key}.onnx"
        candidate = candidate_for(key, args.out)
        for layout in layouts:
            data = DATA / key / "eval" if layout == "folder" else stacked(key, args.out)
            for size in sizes:
                plain, compare, result = measure_pair(key, reference, candidate, data, size,
                                                      args.out, limits, args.repeat)
                if not (plain.ok and compare.ok):
                    print(f"| {key} | {layout} | {size or 'per file'} | {plain.reason() or 'ok'} "
                          f"| {compare.reason() or 'ok'} | | | | |", flush=True)
                    continue
                print(f"| {key} | {layout} | {size or 'per file'} | {plain.seconds:.1f} | "
                      f"{compare.seconds:.1f} | {plain.peak_rss_mb:.0f} | "
                      f"{compare.peak_rss_mb:.0f} | "
                      f"{compare.peak_rss_mb / plain.peak_rss_mb:.2f} | "
                      f"{task_figures(result)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
