"""Peak memory and time of `qtool calibrate` on hostile inputs that are refused by a cap.

    python scripts/bench_hostile.py [--gib 3] [--work DIR]

Builds, in a scratch folder: a small model; a zip-bomb `.npz` (a few MB whose array decompresses to
--gib GiB of zeros); a model of ~100 bytes whose sparse initializer is 4 GiB once dense. Then runs
`qtool calibrate` on each in its own process and prints exit status, wall time and the child's
peak RSS (ru_maxrss), so a cap that reads the data anyway shows up as gigabytes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.tiny_models import conv_relu_gemm, save


def zip_bomb(path: Path, gib: float) -> None:
    """An .npz whose float32 array x [N, 2, 6, 6] is `gib` GiB of zeros, streamed (never in RAM)."""
    samples = int(gib * (1 << 30)) // (72 * 4)
    chunk = b"\0" * (64 << 20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive, \
            archive.open("x.npy", "w", force_zip64=True) as member:
        np.lib.format.write_array_header_1_0(
            member, {"descr": "<f4", "fortran_order": False, "shape": (samples, 2, 6, 6)})
        left = samples * 72 * 4
        while left:
            step = min(left, len(chunk))
            member.write(chunk[:step])
            left -= step


def sparse_model(path: Path) -> None:
    dims = [1 << 30]
    sparse = helper.make_sparse_tensor(numpy_helper.from_array(np.ones(1, np.float32), "w"),
                                       numpy_helper.from_array(np.zeros(1, np.int64), "i"), dims)
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)])
    graph.sparse_initializer.append(sparse)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


# Runs qtool as its only child and prints that child's peak RSS: ru_maxrss of RUSAGE_CHILDREN
# is the largest over all children ever waited for, so each case gets a fresh parent.
_WRAPPER = ("import resource, subprocess, sys; "
            "code = subprocess.run([sys.executable, '-m', 'qtool', *sys.argv[1:]]).returncode; "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
            "sys.exit(code)")


def run(args: list[str]) -> tuple[int, float, float, str]:
    """(exit status, seconds, peak RSS of qtool in MiB, its last stderr line)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _WRAPPER, *args], capture_output=True,
                          text=True, cwd=REPO, check=False)
    seconds = time.perf_counter() - start
    lines = done.stderr.strip().splitlines()
    rss = int(lines[-1]) / 1024
    return done.returncode, seconds, rss, lines[-2] if len(lines) > 1 else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=3.0)
    parser.add_argument("--work", type=Path, default=None)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qtool-hostile-") as tmp:
        work = options.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        save(conv_relu_gemm(), work / "net.onnx")
        start = time.perf_counter()
        zip_bomb(work / "bomb.npz", options.gib)
        print(f"zip bomb: {(work / 'bomb.npz').stat().st_size / 1e6:.1f} MB file, "
              f"{options.gib:g} GiB decompressed (built in {time.perf_counter() - start:.1f} s)")
        sparse_model(work / "sparse.onnx")
        np.save(work / "x.npy", np.zeros((1, 4), np.float32))  # never read: the model is refused
        cases = {
            "zip bomb, --num-samples 8": ["calibrate", str(work / "net.onnx"), "--data",
                                          str(work / "bomb.npz"), "--num-samples", "8", "-o",
                                          str(work / "a.json")],
            "sparse 4 GiB initializer": ["calibrate", str(work / "sparse.onnx"), "--data",
                                         str(work / "x.npy"), "-o", str(work / "b.json")],
        }
        for name, args in cases.items():
            code, seconds, rss, line = run(args)
            print(f"{name:<28} exit {code}  {seconds:5.2f} s  peak RSS {rss:7.0f} MiB  {line[:110]}")


if __name__ == "__main__":
    main()
