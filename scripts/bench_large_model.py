#!/usr/bin/env python3
"""Calibrate and quantize a model just over 2 GB (weights as external data) through the CLI and
report each step's wall time and peak RSS.

The model is a chain of MatMul layers with [dim, dim] float32 weights (with Relu between them),
written straight to an external-data file so that building it costs no memory. Each qtool step
runs in a fresh subprocess; its peak RSS comes from wait4(), i.e. that process alone. The weights
alone are the floor: a step that held two copies of them would show about twice that.

    python scripts/bench_large_model.py                    # 2.1 GB in /tmp, removed afterwards
    python scripts/bench_large_model.py --gb 0.5 --keep    # smaller, keep the folder
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

REPO = Path(__file__).resolve().parent.parent


def build_model(folder: Path, total_bytes: int, dim: int, seed: int = 0) -> tuple[Path, int]:
    """Write model.onnx + model.onnx.data (MatMul/Relu chain); returns (path, weight bytes)."""
    layer_bytes = dim * dim * 4
    layers = max(1, -(-total_bytes // layer_bytes))
    rng = np.random.default_rng(seed)
    data_name = "model.onnx.data"
    initializers, nodes = [], []
    offset = 0
    with open(folder / data_name, "wb") as data:
        for index in range(layers):
            # Scaled so activations stay around 1 through the chain.
            weight = rng.standard_normal((dim, dim), dtype=np.float32)
            weight *= np.float32(1.0 / np.sqrt(dim))
            weight.tofile(data)
            del weight
            tensor = TensorProto(name=f"w{index}", data_type=TensorProto.FLOAT, dims=[dim, dim],
                                 data_location=TensorProto.EXTERNAL)
            for key, value in (("location", data_name), ("offset", str(offset)),
                               ("length", str(layer_bytes))):
                tensor.external_data.add(key=key, value=value)
            initializers.append(tensor)
            offset += layer_bytes
            source = "x" if index == 0 else f"r{index - 1}"
            output = "y" if index == layers - 1 else f"m{index}"
            nodes.append(helper.make_node("MatMul", [source, f"w{index}"], [output], name=f"mm{index}"))
            if index < layers - 1:
                nodes.append(helper.make_node("Relu", [output], [f"r{index}"], name=f"relu{index}"))
    graph = helper.make_graph(
        nodes, "large_chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", dim])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", dim])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "model.onnx"
    with open(path, "wb") as handle:
        handle.write(model.SerializeToString())
    return path, offset


def measure(name: str, args: list[str]) -> dict:
    """Run one qtool command in a fresh process: wall time, exit status and the peak RSS of
    exactly that process (from wait4)."""
    command = [sys.executable, "-m", "qtool", *args]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return {"step": name, "seconds": round(seconds, 2), "code": process.returncode,
                "peak_rss_mib": round(usage.ru_maxrss / 1024.0, 1),
                "stdout": out.read().decode(errors="replace").strip(),
                "stderr": err.read().decode(errors="replace").strip()}


def run_steps(folder: Path, model: Path, data_dir: Path, weights: str) -> list[dict]:
    """calibrate, then quantize, then check, each in its own measured process; a step that
    fails ends the chain."""
    calib = folder / "model.calib.json"
    output = folder / "model.int8.onnx"
    steps = [
        measure("calibrate", ["calibrate", str(model), "--data", str(data_dir), "-o", str(calib),
                              "--method", "max", "-q", "--json"]),
    ]
    if steps[-1]["code"] == 0:
        steps.append(measure("quantize", ["quantize", str(model), "--calib", str(calib),
                                          "-o", str(output), "--weights", weights,
                                          "-q", "--json"]))
    if steps[-1]["code"] == 0:
        steps.append(measure("check", ["check", str(output), "-q", "--json"]))
    return steps


def print_result(result: dict, dim: int) -> None:
    print(f"{result['machine']}; weights {result['weights_mib']} MiB in {result['layers']} "
          f"MatMul layers of {dim}x{dim}")
    for step in result["steps"]:
        status = "ok" if step["code"] == 0 else f"exit {step['code']}: {step['stderr'][-300:]}"
        print(f"  {step['step']:<10} {step['seconds']:7.2f} s   peak RSS {step['peak_rss_mib']:8.1f} MiB"
              f"   ({step['peak_rss_mib'] / result['weights_mib']:.2f}x weights)  {status}")
    print("  files: " + ", ".join(f"{n} {s} MiB" for n, s in result["files_mib"].items()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=2.1, help="weight size in GB (10^9 bytes)")
    parser.add_argument("--dim", type=int, default=8192, help="MatMul width")
    parser.add_argument("--batches", type=int, default=4, help="calibration batches")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--weights", choices=["fp32", "int8"], default="int8",
                        help="quantize --weights (int8 stores INT8 weights)")
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp one)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="qtool-large-", dir=args.dir))
    try:
        start = time.perf_counter()
        model, weight_bytes = build_model(folder, int(args.gb * 1e9), args.dim)
        build_seconds = time.perf_counter() - start
        data_dir = folder / "calib"
        data_dir.mkdir()
        rng = np.random.default_rng(1)
        for index in range(args.batches):
            np.save(data_dir / f"b{index}.npy",
                    rng.standard_normal((args.batch_size, args.dim), dtype=np.float32))
        steps = run_steps(folder, model, data_dir, args.weights)
        sizes = {path.name: path.stat().st_size for path in sorted(folder.iterdir()) if path.is_file()}
        result = {
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
            "weights_mib": round(weight_bytes / (1 << 20), 1),
            "layers": len(onnx.load(str(model), load_external_data=False).graph.initializer),
            "dim": args.dim, "build_seconds": round(build_seconds, 2),
            "steps": [{key: value for key, value in step.items() if key not in ("stdout",)}
                      for step in steps],
            "files_mib": {name: round(size / (1 << 20), 1) for name, size in sizes.items()},
        }
    finally:
        if args.keep:
            print(f"kept {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_result(result, args.dim)
    return 0 if all(step["code"] == 0 for step in result["steps"]) else 1


if __name__ == "__main__":
    sys.exit(main())
