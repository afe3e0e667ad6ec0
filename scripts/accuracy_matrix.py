#!/usr/bin/env python3
"""Real-model accuracy matrix: every model of scripts/matrix_models.py quantized by every row
(qtool's threshold methods, onnxruntime.quantization and NVIDIA ModelOpt as anchors), each INT8
model evaluated with onnxruntime CPU against FP32 on held-out real inputs.

Rows (--rows, comma-separated):
  entropy, max, percentile, mse   qtool calibrate --method M, then qtool quantize
  default                         qtool calibrate with no --method (whatever the default is)
  auto                            qtool calibrate --method auto
  ort                             onnxruntime.quantization: quant_pre_process, opset >= 13, QDQ,
                                  Conv/ConvTranspose/Gemm/MatMul only, per-channel, symmetric
                                  QInt8, MinMax (ort-entropy, ort-percentile: other calibrators)
  ort-all                         the same with every op type onnxruntime quantizes
  modelopt                        python -m modelopt.onnx.quantization --quantize_mode int8
                                  --high_precision_dtype fp32, from its own venv
                                  (models/.modelopt-venv)
  --extra-row 'NAME=CALIBRATE ARGS[ :: QUANTIZE ARGS]' adds a qtool row with those arguments.

Every row runs as fresh child processes, measured for wall time and peak RSS
(scripts/bench_measure.py). A row whose INT8 outputs are NaN, all zero or constant is flagged
"broken" whatever the tool. Results: out/matrix/results.json, and a summary plus one table per
model written into BENCHMARKS.md between the matrix markers.

    .venv/bin/python scripts/accuracy_matrix.py                # make matrix
    .venv/bin/python scripts/accuracy_matrix.py --quick        # smoke run, prints only
    .venv/bin/python scripts/accuracy_matrix.py --models magika,minilm --rows max,ort --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import matrix_models as mm
from bench import parse_list
from bench_measure import Measured, combine, run_measured
from bench_report import machine_description
from matrix_report import (
    BEGIN,
    END,
    model_table,
    render,
    summary_cell,
    summary_table,
    write_matrix_markdown,
)

# The report's names the tests read from here, beside this script's own.
__all__ = ["BEGIN", "END", "main", "parse_args", "parse_extra_row", "render", "summary_cell",
           "write_matrix_markdown"]

QTOOL_ROWS = {"entropy": ["--method", "entropy"], "max": ["--method", "max"],
              "percentile": ["--method", "percentile"], "mse": ["--method", "mse"],
              "default": [], "auto": ["--method", "auto"]}
# name -> (calibrate method, every op type instead of Conv/ConvTranspose/Gemm/MatMul only)
ORT_ROWS = {"ort": ("MinMax", False), "ort-all": ("MinMax", True),
            "ort-entropy": ("Entropy", False), "ort-percentile": ("Percentile", False)}
ALL_ROWS = [*QTOOL_ROWS, *ORT_ROWS, "modelopt"]
DEFAULT_ROWS = ["entropy", "max", "percentile", "mse", "default", "auto", "ort", "ort-all",
                "modelopt"]
MODELOPT_VERSION = "0.47.0"
MODELOPT_PY = REPO / "models" / ".modelopt-venv" / "bin" / "python"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_extra_row(text: str) -> tuple[str, list[str], list[str]]:
    """'NAME=CALIBRATE ARGS[ :: QUANTIZE ARGS]' -> (name, calibrate args, quantize args)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME='calibrate args', got {text!r}")
    name, rest = text.split("=", 1)
    calib, _, quant = rest.partition("::")
    if not name.strip() or name.strip() in ALL_ROWS:
        raise argparse.ArgumentTypeError(f"extra row needs a new name, got {name!r}")
    return name.strip(), shlex.split(calib), shlex.split(quant)


# ---------------------------------------------------------------------------- rows

def limits(args) -> dict:
    # With a snapshot, children start in it: `python -m` puts the working directory first on
    # sys.path, ahead of PYTHONPATH, so the tree's own qtool/ would win from the repository.
    return {"timeout_s": args.timeout, "mem_limit_mb": args.mem_limit_gb * 1024,
            "cwd": str(args.qtool_cwd or REPO), "env": args.qtool_env}


def qtool_snapshot(rev: str, out: Path) -> tuple[Path, str]:
    """qtool/ as committed at `rev`, exported under `out`, so that a long run measures one
    version even while the working tree changes. The built counting extension is copied in
    when its C source is the same in the snapshot as in the working tree."""
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", f"{rev}^{{commit}}"],
                         capture_output=True, text=True, check=True).stdout.strip()
    dest = out / f"qtool-src-{sha[:12]}"
    if not (dest / "qtool" / "__init__.py").is_file():
        tmp = out / f"qtool-src-{sha[:12]}.part"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", sha, "qtool"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        for built in sorted((REPO / "qtool").rglob("*.so")):
            source = built.parent / (built.name.split(".")[0] + ".c")
            twin = tmp / built.relative_to(REPO)
            if source.is_file() and (twin.parent / source.name).is_file() \
                    and source.read_bytes() == (twin.parent / source.name).read_bytes():
                shutil.copyfile(built, twin)
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
    return dest, sha


def run_qtool(model: Path, calib_dir: Path, out: Path, calib_args: list[str],
              quant_args: list[str], batch: int | None, args) -> Measured:
    qtool = [sys.executable, "-m", "qtool"]
    calib = out.with_suffix(".calib.json")
    batching = ["--batch-size", str(batch)] if batch else []
    steps = [run_measured(qtool + ["calibrate", str(model), "--data", str(calib_dir), *batching,
                                   *calib_args, "-o", str(calib), "-q"], **limits(args))]
    if steps[0].ok:
        steps.append(run_measured(qtool + ["quantize", str(model), "--calib", str(calib),
                                           *quant_args, "-o", str(out), "-q"], **limits(args)))
    return combine(steps)


def run_ort(model: Path, calib_dir: Path, out: Path, method: str, all_ops: bool,
            args) -> Measured:
    return run_measured([sys.executable, str(HERE / "matrix_models.py"), "ort", "--model",
                         str(model), "--data", str(calib_dir), "--output", str(out),
                         "--method", method, *(["--all-ops"] if all_ops else [])],
                        **limits(args))


def run_modelopt(model: Path, calib_dir: Path, out: Path, args) -> Measured:
    python = Path(args.modelopt_python)
    if not python.is_file():
        return Measured("error", 0.0, 0.0, stderr=f"no ModelOpt venv at {python} "
                        f"(python -m venv models/.modelopt-venv && models/.modelopt-venv/bin/pip "
                        f"install 'nvidia-modelopt[onnx]=={MODELOPT_VERSION}')")
    stacked = out.with_suffix(".calib.npz")
    stack = subprocess.run([sys.executable, str(HERE / "matrix_models.py"), "stack", "--data",
                            str(calib_dir), "--output", str(stacked)], check=False, capture_output=True,
                           text=True)
    if stack.returncode:
        return Measured("error", 0.0, 0.0, stderr=stack.stderr)
    # FP32 outside the Q/DQ regions, like qtool's default: ModelOpt's own default (fp16) gives
    # graphs whose onnxruntime CPU outputs are garbage (EfficientNet-Lite0: -8 dB, 0% top-1).
    return run_measured([str(python), "-m", "modelopt.onnx.quantization", "--onnx_path",
                         str(model), "--quantize_mode", "int8", "--calibration_data_path",
                         str(stacked), "--calibration_eps", "cpu", "--high_precision_dtype",
                         "fp32", "--output_path", str(out)], **limits(args))


def run_row(row: str, model: Path, spec: mm.Spec, calib_dir: Path, folder: Path,
            args) -> tuple[Measured, Path]:
    out = folder / f"{row}.int8.onnx"
    if out.exists():
        out.unlink()
    if row in QTOOL_ROWS:
        measured = run_qtool(model, calib_dir, out, QTOOL_ROWS[row], [], spec.batch_size, args)
    elif row in args.extra:
        calib_args, quant_args = args.extra[row]
        measured = run_qtool(model, calib_dir, out, calib_args, quant_args, spec.batch_size, args)
    elif row in ORT_ROWS:
        measured = run_ort(model, calib_dir, out, *ORT_ROWS[row], args)
    else:
        measured = run_modelopt(model, calib_dir, out, args)
    if measured.ok and not out.is_file():
        measured.status = "error"
        measured.stderr += f"\nno output model written at {out}"
    return measured, out


def reason_of(measured: Measured) -> str:
    """The line that says why a run failed: the last error-looking line of its stderr."""
    lines = [ln.strip() for ln in measured.stderr.splitlines() if ln.strip()]
    for line in reversed(lines):
        if any(word in line.lower() for word in ("error", "refus", "exception", "invalid",
                                                 "not ", "cannot", "unsupported", "no such")):
            return line[:300]
    return measured.reason()[:300]


# ---------------------------------------------------------------------------- one model

def run_model(key: str, args) -> dict:
    spec = mm.SPECS[key]
    root = args.out / "data" / key
    folder = args.out / "runs" / key
    folder.mkdir(parents=True, exist_ok=True)
    entry: dict = {"key": key, "title": spec.title, "kind": spec.kind, "about": spec.about,
                   "rows": {}}
    # Data in a child process: its inference would otherwise raise every later child's peak RSS.
    prep = subprocess.run([sys.executable, str(HERE / "matrix_models.py"), "prepare", key,
                           "--root", str(root), "--calib", str(args.calib_samples), "--eval",
                           str(args.eval_samples)], check=False, capture_output=True, text=True,
                          cwd=REPO)
    if prep.returncode:
        entry["error"] = (prep.stderr.strip().splitlines() or ["prepare failed"])[-1]
        log(f"{key}: data preparation failed: {entry['error']}")
        return entry
    info = json.loads(prep.stdout.strip().splitlines()[-1])
    model = Path(info["model"])
    entry.update(model=str(model.relative_to(REPO) if model.is_relative_to(REPO) else model.name),
                 sha256=mm.sha256_of(model), calib_samples=info["calib_count"],
                 eval_samples=info["eval_count"], batch_size=spec.batch_size)
    log(f"{spec.title}: {info['calib_count']} calibration / {info['eval_count']} evaluation "
        f"samples")
    produced = {}
    for row in args.rows:
        measured, out = run_row(row, model, spec, root / "calib", folder, args)
        result = row_result(row, measured, out, args)
        if measured.ok:
            produced[row] = str(out)
        entry["rows"][row] = result
        log(f"  {row:<14} {measured.status:<7} {measured.seconds:7.1f} s "
            f"{measured.peak_rss_mb:7.0f} MiB  {result.get('reason', '')[:150]}")
    if produced:
        evaluate_rows(entry, key, model, root, folder, produced, args)
    print(f"\n### {spec.title}\n\n{model_table(entry)}\n", flush=True)
    return entry


def row_result(row: str, measured: Measured, out: Path, args) -> dict:
    """One row's status, time and memory, and its model or the reason it has none."""
    result = {"status": measured.status, "seconds": round(measured.seconds, 2),
              "peak_rss_mb": round(measured.peak_rss_mb, 1)}
    if measured.ok:
        if row in ORT_ROWS:  # what the onnxruntime worker had to change, if anything
            result["notes"] = json.loads(measured.stdout.strip().splitlines()[-1])["notes"]
        result["model"] = str(out.relative_to(REPO) if out.is_relative_to(REPO) else out)
    else:
        result["reason"] = reason_of(measured)
        # qtool ends a user error (a model or data it declines) with one line and status 1
        if (row in QTOOL_ROWS or row in args.extra) and measured.returncode == 1 \
                and result["reason"].startswith("error:") \
                and "onnxruntime failed" not in result["reason"]:
            result["status"] = "refused"
    return result


def evaluate_rows(entry: dict, key: str, model: Path, root: Path, folder: Path,
                  produced: dict, args) -> None:
    """FP32 against every produced INT8 model on the evaluation split, in a child process; the
    metrics go into entry's rows (a row whose model failed or broke says so)."""
    spec_path = folder / "eval.json"
    spec_path.write_text(json.dumps({"key": key, "fp32": str(model), "eval": str(root / "eval"),
                                     "meta": str(root / "meta.json"), "models": produced}))
    evaluated = run_measured([sys.executable, str(HERE / "matrix_models.py"), "eval",
                              "--spec", str(spec_path)], timeout_s=args.timeout * 3,
                             mem_limit_mb=args.mem_limit_gb * 1024, cwd=str(REPO))
    if not evaluated.ok:
        entry["error"] = f"evaluation failed: {reason_of(evaluated)}"
        log(f"{key}: {entry['error']}")
        return
    metrics = json.loads(evaluated.stdout.strip().splitlines()[-1])
    entry["fp32"] = metrics["fp32"]
    for row, values in metrics["rows"].items():
        result = entry["rows"][row]
        result.update(values)
        if "error" in values:
            result["status"], result["reason"] = "eval error", values["error"]
        elif values.get("broken"):
            result["status"], result["reason"] = "broken", values["broken"]


# ---------------------------------------------------------------------------- main

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=parse_list(list(mm.SPECS)), default=list(mm.SPECS),
                        help="comma-separated models (default: all)")
    parser.add_argument("--rows", default=",".join(DEFAULT_ROWS),
                        help=f"comma-separated rows (default {','.join(DEFAULT_ROWS)}; also "
                             f"ort-entropy, ort-percentile and --extra-row names)")
    parser.add_argument("--extra-row", action="append", type=parse_extra_row, default=[],
                        metavar="NAME='ARGS[ :: QARGS]'",
                        help="a qtool row: calibrate arguments, optionally ' :: ' and quantize "
                             "arguments; added to --rows. Repeatable.")
    parser.add_argument("--calib-samples", type=int, default=64)
    parser.add_argument("--eval-samples", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    parser.add_argument("--mem-limit-gb", type=float, default=16.0, help="resident GiB per run")
    parser.add_argument("--modelopt-python", default=str(MODELOPT_PY),
                        help="python of the venv with nvidia-modelopt[onnx]")
    parser.add_argument("--qtool-commit", metavar="REV",
                        help="run qtool as committed at REV (exported under --out), not the "
                             "working tree")
    parser.add_argument("--out", type=Path, default=REPO / "out" / "matrix")
    parser.add_argument("--markdown", type=Path, default=REPO / "BENCHMARKS.md")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 8 calibration / 8 evaluation samples, prints only")
    args = parser.parse_args(argv)
    args.extra = {name: (c, q) for name, c, q in args.extra_row}
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    rows += [name for name in args.extra if name not in rows]
    unknown = [r for r in rows if r not in ALL_ROWS and r not in args.extra]
    if unknown or not rows:
        parser.error(f"unknown rows {unknown}; choose from {', '.join(ALL_ROWS)} or --extra-row")
    args.rows = rows
    if args.quick:
        args.calib_samples, args.eval_samples = min(args.calib_samples, 8), min(args.eval_samples, 8)
        args.no_write = True
    if args.calib_samples < 1 or args.eval_samples < 1:
        parser.error("sample counts must be positive")
    return args


def modelopt_version(python: str) -> str:
    try:
        code = "import importlib.metadata as m; print(m.version('nvidia-modelopt'))"
        return subprocess.run([python, "-c", code], check=False, capture_output=True,
                              text=True, timeout=120).stdout.strip() or "not installed"
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"


def main(argv=None) -> int:
    args = parse_args(argv)
    args.out = args.out.resolve()
    args.qtool_env = args.qtool_cwd = None
    snapshot = None
    if args.qtool_commit:
        args.out.mkdir(parents=True, exist_ok=True)
        folder, snapshot = qtool_snapshot(args.qtool_commit, args.out)
        args.qtool_env = dict(os.environ, PYTHONPATH=str(folder))
        args.qtool_cwd = folder
        log(f"qtool from commit {snapshot[:12]} ({folder})")
    # SIGTERM as an exception, so that the child being measured is killed with us
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"date": time.strftime("%Y-%m-%d"), "machine": machine_description(),
              "command": " ".join(["python scripts/accuracy_matrix.py",
                                   *map(shlex.quote, argv if argv is not None else sys.argv[1:])]),
              "rows": args.rows, "calib_samples": args.calib_samples,
              "eval_samples": args.eval_samples, "timeout": args.timeout,
              "mem_limit_gb": args.mem_limit_gb, "extra_rows": {k: list(v) for k, v in
                                                                args.extra.items()},
              "qtool_commit": snapshot, "models": []}
    if "modelopt" in args.rows:
        report["modelopt"] = modelopt_version(args.modelopt_python)
    load_before = os.getloadavg()[0]
    for key in args.models:
        report["models"].append(run_model(key, args))
        report["minutes"] = (time.perf_counter() - start) / 60
        (args.out / "results.json").write_text(json.dumps(report, indent=1, default=str))
    report["minutes"] = (time.perf_counter() - start) / 60
    report["load"] = [load_before, os.getloadavg()[0]]
    (args.out / "results.json").write_text(json.dumps(report, indent=1, default=str))
    print("\n" + summary_table(report) + "\n", flush=True)
    log(f"{report['minutes']:.1f} minutes; results in {args.out / 'results.json'}")
    if not args.no_write:
        write_matrix_markdown(args.markdown, render(report))
        log(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
