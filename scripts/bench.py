#!/usr/bin/env python3
"""qtool against onnxruntime.quantization on real models: time, peak memory, INT8 accuracy.

For each model, on the same machine, the same calibration samples (read by the same reader with
the same preprocessing) and the same batch size, every run in its own fresh child process:

  FP32 inference     plain onnxruntime CPU inference over the calibration samples (the floor;
                     the faster of two runs)
  qtool entropy      `qtool calibrate --method entropy` + `qtool quantize`
  qtool max          `qtool calibrate --method max` + `qtool quantize`
  ORT Entropy        onnxruntime.quantization.quantize_static, QDQ, per_channel=True, QInt8
  ORT Percentile     activations and weights, ActivationSymmetric and WeightSymmetric
  ORT MinMax

Each run has a wall-clock and a resident-memory limit and is reported as "timeout" or "OOM"
instead of hanging or taking the machine down. The quantized models are then evaluated with
onnxruntime CPU against the FP32 model on held-out inputs. A --samples sweep repeats the
calibration of the sweep models at larger sample counts (data repeated when needed) to show how
time and peak memory grow.

    bash scripts/fetch_models.sh          # once: models and images into models/ (bench.py runs
                                          # it itself when models/ is empty)
    python scripts/bench.py               # full run (make bench), writes BENCHMARKS.md
    python scripts/bench.py --quick       # smoke run: few samples, no sweep, prints only
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import bench_data as data
from bench_cases import MODELS_DIR, Case, build_cases
from bench_measure import Measured, combine, run_measured
from bench_report import (
    BEGIN,
    END,
    INFER,
    TIME_HEADER,
    TOOLS,
    case_table,
    fmt_metric,
    machine_description,
    markdown_table,
    render,
    sweep_table,
    write_markdown,
)

# The report's names the tests and the accuracy matrix read from here, beside this script's own.
__all__ = ["BEGIN", "END", "INFER", "MODEL_KEYS", "TIME_HEADER", "TOOLS", "add_ratios",
           "case_table", "fmt_metric", "machine_description", "main", "markdown_table",
           "parse_args", "parse_list", "sweep_table", "usable_count", "write_markdown"]

INFER_RUNS = 2


# ---------------------------------------------------------------------------- runs

def worker_command(job: str, case: Case, data_dir: Path, batch_size: int, *extra: str) -> list[str]:
    command = [sys.executable, str(HERE / "bench_workers.py"), job, "--model", str(case.model),
               "--data", str(data_dir), "--batch-size", str(batch_size), *extra]
    if case.preprocess:
        command += ["--preprocess", json.dumps(case.preprocess)]
    return command


def qtool_config(case: Case, folder: Path) -> list[str]:
    if not case.preprocess:
        return []
    path = folder / "preprocess.toml"
    lines = ["[preprocess]"] + [f"{k} = {json.dumps(v)}" for k, v in case.preprocess.items()]
    path.write_text("\n".join(lines) + "\n")
    return ["--config", str(path)]


def run_tool(tool: str, case: Case, data_dir: Path, out_dir: Path, args) -> tuple[Measured, Path]:
    limits = {"timeout_s": args.timeout, "mem_limit_mb": args.mem_limit_gb * 1024, "cwd": str(REPO)}
    slug = tool.lower().replace(" ", "_")
    output = out_dir / f"{slug}.onnx"
    if tool.startswith("qtool"):
        method = tool.split()[1]
        calib = out_dir / f"{slug}.calib.json"
        qtool = [sys.executable, "-m", "qtool"]
        steps = [run_measured(qtool + ["calibrate", str(case.model), "--data", str(data_dir),
                                       "--method", method, "--batch-size", str(args.batch_size),
                                       "-o", str(calib), "-q", *qtool_config(case, out_dir)],
                              **limits)]
        if steps[0].ok:
            steps.append(run_measured(qtool + ["quantize", str(case.model), "--calib", str(calib),
                                               "-o", str(output), "-q"], **limits))
        measured = combine(steps)
        measured.parts = {"calibrate": (steps[0].seconds, steps[0].cpu_seconds)}
        return measured, output
    method = tool.split()[1]
    command = worker_command("ort", case, data_dir, args.batch_size, "--method", method,
                             "--output", str(output))
    return run_measured(command, **limits), output


def run_infer(case: Case, data_dir: Path, args) -> Measured:
    return run_measured(worker_command("infer", case, data_dir, args.batch_size),
                        timeout_s=args.timeout, mem_limit_mb=args.mem_limit_gb * 1024,
                        cwd=str(REPO))


def calibration_folder(case: Case, pool: list[Path], count: int, args) -> Path:
    return data.folder_of(pool, args.workdir / case.key / f"calib_{count}", count)


def measure_all(case: Case, pool: list[Path], count: int, args, log,
                failed_before: dict[str, str] | None = None) -> dict[str, dict]:
    """Inference and every tool on `count` samples of `pool`; a tool that already failed at a
    smaller count is not run again (it is reported as skipped)."""
    folder = calibration_folder(case, pool, count, args)
    out_dir = args.workdir / case.key / f"out_{count}"
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict] = {}
    # The floor is the faster of two runs: other load on the machine only ever adds time.
    runs = [run_infer(case, folder, args) for _ in range(INFER_RUNS)]
    rows[INFER] = row_of(min(runs, key=lambda r: (not r.ok, r.seconds)), None)
    rows[INFER]["all_seconds"] = [r.seconds for r in runs]
    log(f"  {case.key} {count:>5} {INFER:<15} {describe(rows[INFER])}")
    for tool in args.tools:
        if failed_before and tool in failed_before:
            rows[tool] = {"status": "skipped", "reason": failed_before[tool]}
        else:
            measured, output = run_tool(tool, case, folder, out_dir, args)
            rows[tool] = row_of(measured, output if measured.ok else None)
        log(f"  {case.key} {count:>5} {tool:<15} {describe(rows[tool])}")
    add_ratios(rows)
    return rows


def add_ratios(rows: dict[str, dict]) -> None:
    """Wall and CPU time of every run (and of qtool's calibrate step) over FP32 inference's."""
    floor = rows[INFER]
    if floor["status"] != "ok":
        return
    for row in rows.values():
        if row.get("status") != "ok":
            continue
        row["ratio"] = row["seconds"] / floor["seconds"]
        row["cpu_ratio"] = row["cpu_seconds"] / floor["cpu_seconds"]
        if "calib_seconds" in row:
            row["calib_ratio"] = row["calib_seconds"] / floor["seconds"]
            row["calib_cpu_ratio"] = row["calib_cpu_seconds"] / floor["cpu_seconds"]


def row_of(measured: Measured, output: Path | None) -> dict:
    row = {"status": measured.status, "seconds": measured.seconds,
           "cpu_seconds": measured.cpu_seconds, "peak_rss_mb": measured.peak_rss_mb,
           "model": str(output) if output else None}
    if "calibrate" in measured.parts:
        row["calib_seconds"], row["calib_cpu_seconds"] = measured.parts["calibrate"]
    if not measured.ok:
        row["reason"] = measured.reason()
    return row


def describe(row: dict) -> str:
    if row["status"] == "skipped":
        return f"skipped ({row['reason']})"
    text = f"{row['status']:<7} {row['seconds']:8.1f} s {row['peak_rss_mb']:8.0f} MiB"
    if row["status"] == "error":
        text += f"  {row['reason'][:160]}"
    return text


def evaluate(case: Case, rows: dict[str, dict], args) -> dict:
    folder = data.folder_of(case.eval_files, args.workdir / case.key / "eval")
    spec = {"task": case.task, "fp32": str(case.model), "data": str(folder),
            "preprocess": case.preprocess, "batch_size": args.batch_size,
            "labels": case.labels, "heldout": case.heldout, "det_thresh": data.DET_THRESH,
            "models": {tool: rows[tool].get("model") for tool in args.tools}}
    spec_path = args.workdir / case.key / "eval.json"
    spec_path.write_text(json.dumps(spec))
    result = run_measured([sys.executable, str(HERE / "bench_workers.py"), "eval", "--spec",
                           str(spec_path)], timeout_s=args.timeout * 2,
                          mem_limit_mb=args.mem_limit_gb * 1024, cwd=str(REPO))
    if not result.ok:
        return {"error": result.reason()}
    return json.loads(result.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- main

def parse_counts(text: str) -> list[int]:
    try:
        counts = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not counts or counts[0] < 1:
        raise argparse.ArgumentTypeError(f"sample counts must be positive, got {text!r}")
    return counts


def parse_list(choices):
    def parse(text: str) -> list[str]:
        items = [part.strip() for part in text.split(",") if part.strip()]
        unknown = [item for item in items if item not in choices]
        if unknown or not items:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(unknown) or 'empty list'}; choose from {', '.join(choices)}")
        return items
    return parse


MODEL_KEYS = ("efficientnet_lite0", "ppocr_det", "ppocr_rec", "ppocr_cls")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=parse_list(MODEL_KEYS), default=list(MODEL_KEYS),
                        help="comma-separated models (default: all)")
    parser.add_argument("--tools", type=parse_list(TOOLS), default=list(TOOLS),
                        help="comma-separated runs (default: all)")
    parser.add_argument("--calib-samples", type=int, default=100,
                        help="calibration samples for the accuracy tables (default 100)")
    parser.add_argument("--samples", type=parse_counts, default=[100, 200, 1000],
                        help="sample counts of the sweep (default 100,200,1000)")
    parser.add_argument("--sweep-models", type=parse_list(MODEL_KEYS),
                        default=["efficientnet_lite0"], help="models swept (default EfficientNet)")
    parser.add_argument("--batch-size", type=int, default=10,
                        help="batch size of every run (default 10; sample counts are cut to a "
                             "multiple of it)")
    parser.add_argument("--det-size", type=int, default=320,
                        help="PP-OCR detector input side, a multiple of 32 (default 320)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    parser.add_argument("--mem-limit-gb", type=float, default=20.0, help="resident GiB per run")
    parser.add_argument("--workdir", type=Path, default=REPO / "out" / "bench")
    parser.add_argument("--output", type=Path, default=REPO / "BENCHMARKS.md")
    parser.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md")
    parser.add_argument("--no-fetch", action="store_true",
                        help="do not run scripts/fetch_models.sh when models/ is empty")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 10 samples, 160x160 detector input, no sweep, "
                             "BENCHMARKS.md untouched")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.calib_samples < 1:
        parser.error("--batch-size and --calib-samples must be positive")
    if args.det_size < 32 or args.det_size % 32:
        parser.error("--det-size must be a positive multiple of 32")
    if args.quick:
        args.calib_samples = min(args.calib_samples, 10)
        args.det_size = min(args.det_size, 160)
        args.samples = []
        args.timeout = min(args.timeout, 300.0)
        args.no_write = True
    return args


def usable_count(wanted: int, available: int | None, batch_size: int) -> int:
    """Samples actually used: at most what is available (None: repeat freely), cut down to a
    multiple of the batch size, because onnxruntime's Entropy and Percentile calibrators stack
    all batches into one array and fail on a shorter last batch."""
    count = wanted if available is None else min(wanted, available)
    return max(batch_size, count - count % batch_size)


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    args.workdir.mkdir(parents=True, exist_ok=True)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    if not args.no_fetch and not (MODELS_DIR / "SOURCES.txt").is_file():
        log("models/ is empty: fetching the models first (scripts/fetch_models.sh)")
        env = dict(os.environ, PY=sys.executable)
        if subprocess.run(["bash", str(HERE / "fetch_models.sh")], env=env, check=False).returncode:
            return 1
    cases = build_cases(args, log)
    if not cases:
        log("nothing to measure: run `bash scripts/fetch_models.sh` first")
        return 1
    log(f"machine: {machine_description()}")
    load_before = os.getloadavg()[0]
    report = {"date": time.strftime("%Y-%m-%d"), "machine": machine_description(),
              "command": " ".join(["python scripts/bench.py", *map(shlex.quote, argv or sys.argv[1:])]),
              "batch_size": args.batch_size, "timeout": args.timeout,
              "mem_limit_gb": args.mem_limit_gb, "cases": [], "sweeps": {}}
    for case in cases:
        count = usable_count(args.calib_samples, len(case.calib_pool), args.batch_size)
        log(f"{case.title}: calibrating on {count} samples")
        rows = measure_all(case, case.calib_pool, count, args, log)
        metrics = evaluate(case, rows, args)
        report["cases"].append({"key": case.key, "title": case.title, "task": case.task,
                                "model": str(case.model.relative_to(REPO)) if case.model.is_relative_to(REPO) else str(case.model),
                                "calib_samples": count, "describe": case.describe, "rows": rows,
                                "metrics": metrics})
        print(f"\n{case.title}, {count} calibration samples\n"
              f"{case_table(case.task, rows, metrics)}\n", flush=True)
        if case.key in args.sweep_models and args.samples:
            sweep, failed = {}, {}
            pool = case.sweep_pool or case.calib_pool
            for wanted in args.samples:
                n = usable_count(wanted, None, args.batch_size)
                if n == count and pool[:count] == case.calib_pool[:count]:
                    sweep[n] = rows  # the accuracy run above already measured this set
                else:
                    log(f"{case.key}: sweep at {n} samples")
                    sweep[n] = measure_all(case, pool, n, args, log, failed)
                for tool in args.tools:
                    row = sweep[n][tool]
                    if row["status"] in ("timeout", "OOM") and tool not in failed:
                        failed[tool] = f"{row['status']} at {n}"
            report["sweeps"][case.key] = sweep
            print(f"\nsweep {case.key}\n{sweep_table(sweep)}\n", flush=True)
    report["minutes"] = (time.perf_counter() - start) / 60
    report["load"] = [load_before, os.getloadavg()[0]]
    (args.workdir / "report.json").write_text(json.dumps(report, indent=1))
    text = render(report)
    if not args.no_write:
        write_markdown(args.output, text)
        log(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
