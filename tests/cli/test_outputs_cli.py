"""Outputs never replace inputs, and every file qtool writes goes through an atomic rename.

Each command is run with -o (and every other output it writes: histograms, caches, data files)
aimed at each of its inputs; it must refuse with one error line, exit 1, and leave the inputs
byte for byte as they were. A scan of the sources keeps direct writes and unpickling out."""

from __future__ import annotations

import ast
import hashlib
import re
from pathlib import Path

import numpy as np
import onnx
import pytest

from qtool.cli.main import main
from tests.tiny_models import conv_relu_gemm, save

QTOOL = Path(__file__).resolve().parents[2] / "qtool"


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """net.onnx, its calibration and Q/DQ model, data as .npy, .npz and a folder, a fake engine."""
    folder = tmp_path_factory.mktemp("outputs")
    save(conv_relu_gemm(), folder / "net.onnx")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 2, 6, 6)).astype(np.float32)
    np.save(folder / "x.npy", x)
    np.savez(folder / "d.npz", x=x)
    (folder / "dir").mkdir()
    np.save(folder / "dir" / "a.npy", x)
    (folder / "net.engine").write_bytes(b"not an engine")
    (folder / "excl.txt").write_text("fc\n")
    return folder


@pytest.fixture(scope="module")
def calibrated(work):
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        for args in (["calibrate", work / "net.onnx", "--data", work / "x.npy", "-q"],
                     ["quantize", work / "net.onnx", "--calib", work / "net.calib.json", "-q"]):
            with pytest.raises(SystemExit) as info:
                main([str(a) for a in args])
            assert info.value.code == 0
    return work


CASES = [
    # (command line with {w} for the folder, the input it would overwrite)
    ("calibrate {w}/net.onnx --data {w}/x.npy -o {w}/net.onnx", "net.onnx"),
    ("calibrate {w}/net.onnx --data {w}/x.npy -o {w}/x.npy", "x.npy"),
    ("calibrate {w}/net.onnx --data {w}/d.npz -o {w}/d.json", "d.npz"),  # d.json -> d.npz
    ("calibrate {w}/net.onnx --data {w}/x.npy --trt-cache {w}/x.npy -o {w}/c.json", "x.npy"),
    ("calibrate {w}/net.onnx --data {w}/x.npy --trt-cache {w}/net.onnx -o {w}/c.json", "net.onnx"),
    ("calibrate {w}/net.onnx --data {w}/dir -o {w}/dir/a.npy", "dir"),
    ("calibrate {w}/net.onnx --from-trt-cache {w}/excl.txt -o {w}/excl.txt", "excl.txt"),
    ("merge-calib {w}/net.calib.json {w}/net.calib.json -o {w}/net.calib.json", "net.calib.json"),
    ("merge-calib {w}/net.calib.json {w}/net.calib.json -o {w}/net.calib.npz", "net.calib.npz"),
    ("quantize {w}/net.onnx --calib {w}/net.calib.json -o {w}/net.onnx", "net.onnx"),
    ("quantize {w}/net.onnx --calib {w}/net.calib.json -o {w}/net.calib.json", "net.calib.json"),
    ("quantize {w}/net.onnx --calib {w}/net.calib.json --exclude-file {w}/excl.txt -o {w}/excl.txt",
     "excl.txt"),
    ("build {w}/net.onnx --shapes x:1,2,6,6 -o {w}/net.onnx", "net.onnx"),
    ("run {w}/net.engine --data {w}/x.npy -o {w}/net.engine", "net.engine"),
    ("run {w}/net.engine --data {w}/x.npy -o {w}/x.npy", "x.npy"),
    ("compare {w}/net.onnx {w}/net.int8.onnx --data {w}/x.npy -o {w}/net.int8.onnx", "net.int8.onnx"),
    ("compare {w}/net.onnx {w}/net.int8.onnx --data {w}/x.npy -o {w}/x.npy", "x.npy"),
    ("sensitivity {w}/net.onnx --calib {w}/net.calib.json --data {w}/x.npy -o {w}/net.onnx",
     "net.onnx"),
    ("report {w}/net.calib.json -o {w}/net.calib.json", "net.calib.json"),
    ("report {w}/net.calib.json --model {w}/net.onnx -o {w}/net.onnx", "net.onnx"),
]


@pytest.mark.parametrize("line, victim", CASES, ids=[c[0].split()[0] + f"-{i}" for i, c in enumerate(CASES)])
def test_outputs_never_replace_inputs(calibrated, qtool, line, victim):
    before = digest(calibrated)
    code, _, err = qtool(*line.format(w=calibrated).split())
    assert code == 1, err
    assert err.startswith("error: output ") and "would overwrite" in err and victim in err
    assert err.count("\n") == 1
    assert digest(calibrated) == before


def test_quantize_never_writes_over_the_models_external_data(tmp_path, qtool):
    """A large output puts its weights in OUTPUT.data: that may not be the input's data file."""
    model = conv_relu_gemm()
    onnx.save_model(model, str(tmp_path / "net.onnx"), save_as_external_data=True,
                    location="q.onnx.data", size_threshold=0)
    np.save(tmp_path / "x.npy", np.ones((2, 2, 6, 6), np.float32))
    assert qtool("calibrate", tmp_path / "net.onnx", "--data", tmp_path / "x.npy", "-q").code == 0
    before = digest(tmp_path)
    code, _, err = qtool("quantize", tmp_path / "net.onnx", "--calib", tmp_path / "net.calib.json",
                         "-o", tmp_path / "q.onnx")
    assert code == 1 and "would overwrite the external data of the input" in err
    code, _, err = qtool("quantize", tmp_path / "net.onnx", "--calib", tmp_path / "net.calib.json",
                         "-o", tmp_path / "q.onnx.data")
    assert code == 1 and "would overwrite the external data of the input" in err
    assert digest(tmp_path) == before
    assert qtool("quantize", tmp_path / "net.onnx", "--calib", tmp_path / "net.calib.json",
                 "-o", tmp_path / "fine.onnx", "-q").code == 0


def test_pipeline_writing_beside_its_inputs_leaves_them_alone(tmp_path, qtool):
    save(conv_relu_gemm(), tmp_path / "net.onnx")
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.normal(size=(8, 2, 6, 6)).astype(np.float32))
    (tmp_path / "p.toml").write_text(
        '[pipeline]\nmodel = "net.onnx"\noutput_dir = "."\n[calibrate]\ndata = "x.npy"\n'
        '[compare]\ndata = "x.npy"\n[build]\nrequired = false\n')
    before = digest(tmp_path)
    code, _, err = qtool("pipeline", tmp_path / "p.toml", "-q")
    after = digest(tmp_path)
    assert code in (0, 1), err
    assert {name: after.get(name) for name in before} == before


# -- static checks over the sources -------------------------------------------------------------

def _sources():
    for path in sorted(QTOOL.rglob("*.py")):
        yield path.relative_to(QTOOL).as_posix(), path.read_text()


# Modules allowed to write a file directly, each only into a path handed out by atomic_path or a
# private temporary folder that is renamed into place whole.
DIRECT_WRITERS = {
    "io/atomic.py",             # atomic_path itself
    "io/external.py",           # into the caller's temporary folder (save_model, sessions)
    "io/model.py",              # save_model: onnx.save_model into an atomic_path temp
    "calib/calibfile/writer.py",  # np.savez_compressed into an atomic_path temp
    "backends/tensorrt/outputs.py",  # zip members into an atomic_path temp
    "backends/tensorrt/build.py",    # engine bytes into an atomic_path temp
    "report/figures.py",        # PNG into an in-memory buffer; report/api.py writes it atomically
}
WRITING_METHODS = {"save", "savez", "savez_compressed", "save_model", "tofile", "savefig", "copy",
                   "copy2", "copyfile", "copytree", "move", "write_text", "write_bytes"}


def _direct_writes(tree: ast.AST):
    """(line, what) for every call that writes a file by itself. Bare write_text/write_bytes
    calls are qtool.io.atomic's helpers and do not count."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id == "open":
            mode = node.args[1] if len(node.args) > 1 else next(
                (k.value for k in node.keywords if k.arg == "mode"), None)
            if isinstance(mode, ast.Constant) and set(str(mode.value)) & set("wax+"):
                yield node.lineno, "open(..., write mode)"
        elif isinstance(func, ast.Attribute) and func.attr in WRITING_METHODS:
            receiver = func.value
            if isinstance(receiver, ast.Name) and receiver.id in ("copy", "dict", "list"):
                continue
            if func.attr == "copy" and not (isinstance(receiver, ast.Name) and receiver.id == "shutil"):
                continue  # array.copy(), dict.copy()
            yield node.lineno, ast.unparse(func)


def test_every_direct_write_sits_behind_an_atomic_rename():
    offenders = []
    for name, text in _sources():
        for line, what in _direct_writes(ast.parse(text)):
            if name not in DIRECT_WRITERS:
                offenders.append(f"{name}:{line}: {what}")
    assert offenders == []


def test_the_write_scan_finds_writes():
    found = list(_direct_writes(ast.parse(
        "open(p, 'wb')\nopen(p)\nnp.save(p, a)\nonnx.save_model(m, p)\nx.copy()\n"
        "write_text(p, s)\nPath(p).write_text(s)\nshutil.copy(a, b)\n")))
    assert [line for line, _ in found] == [1, 3, 4, 7, 8]


def test_no_unpickling_anywhere():
    for name, text in _sources():
        assert not re.search(r"^\s*(import pickle|from pickle|import dill|import joblib)", text, re.MULTILINE), name
        assert "allow_pickle=True" not in text, name
        for call in re.finditer(r"np\.load\(([^)]*)\)", text):
            assert "allow_pickle=False" in call.group(1), f"{name}: {call.group(0)}"
        assert not re.search(r"(?<![.\w])(eval|exec)\(", text), name
