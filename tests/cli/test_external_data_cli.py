"""External data of untrusted models: locations that leave the model's folder are refused before
anything is read, through load_model and through every command that loads a model; tensors whose
data cannot fill their declared shape are one clear error, never a crash later on."""

from __future__ import annotations

import os
import threading

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qtool.cli.main import main
from qtool.errors import QtoolError
from qtool.io.model import check_external_paths, load_model, model_sha256

WEIGHT = (np.arange(16, dtype=np.float32).reshape(4, 4) - 7.5) / 4


def external_tensor(name: str, location: str, dims=(4, 4), offset=None, length=None):
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(dims),
                         data_location=TensorProto.EXTERNAL)
    tensor.external_data.add(key="location", value=location)
    if offset is not None:
        tensor.external_data.add(key="offset", value=str(offset))
    if length is not None:
        tensor.external_data.add(key="length", value=str(length))
    return tensor


def matmul_model(weight: TensorProto) -> onnx.ModelProto:
    """x[N,4] @ w[4,4] -> Relu -> y: one MatMul to calibrate and quantize."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["mm"], name="mm"),
         helper.make_node("Relu", ["mm"], ["y"], name="relu")],
        "ext", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def write_model(folder, location: str, name: str = "m.onnx", **kwargs) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(matmul_model(external_tensor("w", location, **kwargs)).SerializeToString())
    return str(path)


@pytest.fixture
def layout(tmp_path):
    """model/ holds the model; outside/ holds a data file the model must never reach."""
    model_dir, outside = tmp_path / "model", tmp_path / "outside"
    model_dir.mkdir()
    outside.mkdir()
    WEIGHT.tofile(model_dir / "w.bin")
    WEIGHT.tofile(outside / "secret.bin")
    return model_dir, outside


# -- load_model ----------------------------------------------------------------------------------

def test_valid_external_data_loads_exactly(layout):
    model_dir, _ = layout
    (model_dir / "sub").mkdir()
    WEIGHT.tofile(model_dir / "sub" / "w.bin")
    for location in ("w.bin", "sub/w.bin", "./sub/w.bin"):
        model = load_model(write_model(model_dir, location))
        np.testing.assert_array_equal(numpy_helper.to_array(model.graph.initializer[0]), WEIGHT)


def test_symlinked_file_is_refused_even_inside(layout):
    """onnx will not read through a symlinked data file; qtool says so before trying."""
    model_dir, _ = layout
    os.symlink("w.bin", model_dir / "alias.bin")
    with pytest.raises(QtoolError, match="'alias.bin': alias.bin is a symbolic link"):
        load_model(write_model(model_dir, "alias.bin"))


def test_symlinked_folder_is_refused_even_inside(layout):
    model_dir, _ = layout
    (model_dir / "real").mkdir()
    WEIGHT.tofile(model_dir / "real" / "w.bin")
    os.symlink("real", model_dir / "alias")
    with pytest.raises(QtoolError, match="'alias/w.bin': alias is a symbolic link"):
        load_model(write_model(model_dir, "alias/w.bin"))


def _escape_cases(model_dir, outside):
    """(location, expected message) for every way out of the folder; sets up symlinks."""
    os.symlink(outside / "secret.bin", model_dir / "link.bin")
    os.symlink(outside, model_dir / "linkdir")
    os.symlink("../outside/secret.bin", model_dir / "relative_link.bin")
    return [
        (str(outside / "secret.bin"), "must be a relative path"),
        ("../outside/secret.bin", "leaves the model's folder"),
        ("sub/../../outside/secret.bin", "leaves the model's folder"),
        ("..", "leaves the model's folder"),
        ("link.bin", "link.bin is a symbolic link"),
        ("relative_link.bin", "relative_link.bin is a symbolic link"),
        ("linkdir/secret.bin", "linkdir is a symbolic link"),
        ("w.bin\x00../../outside/secret.bin", "must be a file name"),
        ("", "must be a file name"),
    ]


def test_every_escape_is_refused(layout):
    model_dir, outside = layout
    for location, message in _escape_cases(model_dir, outside):
        path = write_model(model_dir, location)
        with pytest.raises(QtoolError, match=message) as info:
            load_model(path)
        assert "\n" not in str(info.value)
        with pytest.raises(QtoolError, match=message):
            load_model(path, load_weights=False)
        with pytest.raises(QtoolError, match=message):
            model_sha256(path)


def test_refused_before_anything_is_read(layout, monkeypatch):
    """Not one open() of any file outside the model's folder, through Python or onnx's C++."""
    model_dir, outside = layout
    opened = []
    real_open, real_os_open = open, os.open

    def spy_open(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    def spy_os_open(path, *args, **kwargs):
        opened.append(str(path))
        return real_os_open(path, *args, **kwargs)

    cases = [(write_model(model_dir, location, f"m{index}.onnx"), message)
             for index, (location, message) in enumerate(_escape_cases(model_dir, outside))]
    monkeypatch.setattr("builtins.open", spy_open)
    monkeypatch.setattr(os, "open", spy_os_open)
    for path, message in cases:
        with pytest.raises(QtoolError, match=message):
            load_model(path)
    monkeypatch.undo()
    assert not [path for path in opened if "outside" in path or "secret" in path]


def test_missing_and_non_regular_data_files(layout):
    model_dir, _ = layout
    with pytest.raises(QtoolError, match=r"external data file not found: .*nothing.bin"):
        load_model(write_model(model_dir, "nothing.bin"))
    (model_dir / "folder").mkdir()
    with pytest.raises(QtoolError, match=r"external data file is not a regular file: .*folder"):
        load_model(write_model(model_dir, "folder"))
    os.mkfifo(model_dir / "pipe.bin")  # opening a FIFO would block: it must not be opened
    with pytest.raises(QtoolError, match=r"is not a regular file: .*pipe.bin"):
        load_model(write_model(model_dir, "pipe.bin"))


@pytest.mark.parametrize("kwargs, message", [
    ({"offset": 100}, r"\(64 bytes at offset 100\) runs past the end of 'w.bin' \(64 bytes\)"),
    ({"offset": 4}, r"\(64 bytes at offset 4\) runs past the end"),
    ({"offset": -4}, r"offset of tensor 'w' is '-4', not a non-negative integer"),
    ({"offset": "0x10"}, r"offset of tensor 'w' is '0x10'"),
    ({"length": 1000}, r"needs 64 bytes of external data, its length says 1000"),
    ({"length": 32}, r"needs 64 bytes of external data, its length says 32"),
    ({"length": -1}, r"length of tensor 'w' is '-1'"),
    ({"dims": (4, 8)}, r"\(128 bytes at offset 0\) runs past the end"),
    ({"dims": (4, -4)}, r"negative dimension \[4, -4\]"),
])
def test_external_ranges_are_checked_before_reading(layout, kwargs, message):
    model_dir, _ = layout
    with pytest.raises(QtoolError, match=message):
        load_model(write_model(model_dir, "w.bin", **kwargs))


def test_unknown_external_data_keys_are_refused(layout):
    model_dir, _ = layout
    model = matmul_model(external_tensor("w", "w.bin"))
    model.graph.initializer[0].external_data.add(key="offest", value="0")
    (model_dir / "typo.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(QtoolError, match="external data of tensor 'w' has unknown key\\(s\\) 'offest'"):
        load_model(model_dir / "typo.onnx")


def test_offset_and_length_that_fit_load_exactly(layout):
    model_dir, _ = layout
    (np.concatenate([np.zeros(3, np.float32), WEIGHT.ravel()])).tofile(model_dir / "padded.bin")
    model = load_model(write_model(model_dir, "padded.bin", offset=12, length=64))
    np.testing.assert_array_equal(numpy_helper.to_array(model.graph.initializer[0]), WEIGHT)


@pytest.mark.parametrize("make, message", [
    (lambda: TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4, 4], raw_data=b"\0" * 60),
     r"tensor 'w' of shape \[4, 4\] needs 64 bytes of data, the file holds 60"),
    (lambda: TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4, 4], float_data=[1.0] * 15),
     r"needs 16 values in float_data, the file holds 15"),
    (lambda: TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4, 4]),
     r"needs 16 values in float_data, the file holds 0"),
    (lambda: TensorProto(name="w", data_type=99, dims=[4, 4], raw_data=b"\0" * 64),
     r"tensor 'w' has an unknown data type 99"),
    (lambda: TensorProto(name="w", dims=[4, 4], raw_data=b"\0" * 64),
     r"tensor 'w' has an unknown data type 0"),
])
def test_inline_payloads_must_fill_their_shape(tmp_path, make, message):
    path = tmp_path / "bad.onnx"
    path.write_bytes(matmul_model(make()).SerializeToString())
    with pytest.raises(QtoolError, match=message):
        load_model(path)


def test_constant_node_payload_is_checked_too(tmp_path):
    value = TensorProto(name="c", data_type=TensorProto.FLOAT, dims=[4, 4], raw_data=b"\0" * 8)
    model = matmul_model(numpy_helper.from_array(WEIGHT, "w"))
    model.graph.node.insert(0, helper.make_node("Constant", [], ["c"], value=value))
    path = tmp_path / "bad.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(QtoolError, match=r"tensor 'c' of shape \[4, 4\] needs 64 bytes"):
        load_model(path)


def test_check_external_paths_lists_resolved_files(layout):
    model_dir, _ = layout
    model = onnx.load(write_model(model_dir, "w.bin"), load_external_data=False)
    assert check_external_paths(model, model_dir) == [(model_dir / "w.bin").resolve()]


# -- through the CLI ---------------------------------------------------------------------------

def run_cli(*args) -> tuple[int, str]:
    try:
        main([str(arg) for arg in args])
        return 0, ""
    except SystemExit as exc:
        return (exc.code if isinstance(exc.code, int) else 1), ""


class FifoTrap:
    """A FIFO that records whether anything opened it for reading.

    A writer thread blocks in open() until a reader appears. Code under test that opened the file
    would release it (and then read nothing); otherwise the test releases it itself at the end.
    """

    def __init__(self, path):
        self.path = path
        os.mkfifo(path)
        self.opened_by_code = False
        self._releasing = False
        self._thread = threading.Thread(target=self._wait, daemon=True)
        self._thread.start()

    def _wait(self):
        fd = os.open(self.path, os.O_WRONLY)
        if not self._releasing:
            self.opened_by_code = True
        os.close(fd)

    def release(self) -> bool:
        self._releasing = True
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        self._thread.join(timeout=5)
        os.close(fd)
        return self.opened_by_code


@pytest.fixture
def trap_layout(tmp_path):
    """A model folder with valid data and calibration inputs; outside/ holds a FIFO trap."""
    model_dir, outside = tmp_path / "model", tmp_path / "outside"
    model_dir.mkdir()
    outside.mkdir()
    WEIGHT.tofile(model_dir / "w.bin")
    rng = np.random.default_rng(0)
    np.save(tmp_path / "data.npy", rng.normal(size=(8, 4)).astype(np.float32))
    # a valid calibration for the commands that read one before the model
    good = write_model(model_dir, "w.bin", "good.onnx")
    assert run_cli("calibrate", good, "--data", tmp_path / "data.npy",
                   "-o", tmp_path / "good.calib.json", "-q")[0] == 0
    trap = FifoTrap(outside / "secret.bin")
    yield tmp_path, model_dir, outside, trap
    trap.release()


def test_valid_external_model_runs_every_command(tmp_path, capsys):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    WEIGHT.tofile(model_dir / "w.bin")
    model = write_model(model_dir, "w.bin")
    np.save(tmp_path / "data.npy", np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32))
    calib, out = tmp_path / "c.json", tmp_path / "q.onnx"
    assert run_cli("calibrate", model, "--data", tmp_path / "data.npy", "-o", calib, "-q")[0] == 0
    assert run_cli("quantize", model, "--calib", calib, "-o", out, "-q")[0] == 0
    assert run_cli("check", out, "-q")[0] == 0
    quantized = load_model(out)
    assert [n.op_type for n in quantized.graph.node].count("DequantizeLinear") == 2


@pytest.mark.parametrize("command", ["calibrate", "quantize", "check", "compare", "sensitivity",
                                     "report"])
def test_cli_refuses_escapes_without_opening_them(trap_layout, capsys, command):
    tmp_path, model_dir, outside, trap = trap_layout
    os.symlink(outside / "secret.bin", model_dir / "link.bin")
    locations = [str(outside / "secret.bin"), "../outside/secret.bin", "link.bin",
                 "w.bin\x00", ""]
    for location in locations:
        model = write_model(model_dir, location)
        args = {"calibrate": [model, "--data", tmp_path / "data.npy", "-o", tmp_path / "c.json"],
                "quantize": [model, "--calib", tmp_path / "c.json", "-o", tmp_path / "q.onnx"],
                "check": [model],
                "compare": [model, model, "--data", tmp_path / "data.npy"],
                "sensitivity": [model, "--calib", tmp_path / "good.calib.json",
                                "--data", tmp_path / "data.npy"],
                "report": [tmp_path / "good.calib.json", "--model", model,
                           "-o", tmp_path / "r.html"]}[command]
        capsys.readouterr()
        code, _ = run_cli(command, *args)
        err = capsys.readouterr().err
        assert code == 1, (location, err)
        assert err.startswith("error: refusing external data location"), err
        assert err.count("\n") == 1 and "Traceback" not in err
        for name in ("c.json", "q.onnx", "r.html"):
            assert not (tmp_path / name).exists()
    assert trap.release() is False, "a command opened the data file outside the model's folder"
