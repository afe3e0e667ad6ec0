"""Hostile inputs at the readers: image files that would run code, decode workers that block,
inputs that would exhaust memory, and counts that used to end in a traceback. Each is one
QtoolError now (tests/cli/test_untrusted_inputs_cli.py runs the commands on such inputs)."""

from __future__ import annotations

import io
import threading
import time
import zipfile

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qtool import limits
from qtool.errors import QtoolError
from qtool.io.data import open_data
from qtool.io.images import IMAGE_FORMATS, decode
from qtool.io.model import InputSpec, load_model
from tests.tiny_models import conv_relu_gemm, save


@pytest.fixture(autouse=True)
def default_limits():
    limits.configure(None)
    yield
    limits.configure(None)


# -- image decoding --------------------------------------------------------------------------

EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n"
       b"newpath 0 0 moveto 8 8 lineto stroke showpage\n%%EOF\n")


def pil_bytes(fmt: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buffer, format=fmt)
    return buffer.getvalue()


def test_only_the_listed_formats_are_decoded(tmp_path, monkeypatch):
    from PIL import EpsImagePlugin

    ran = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: ran.append(a))
    (tmp_path / "a.jpg").write_bytes(EPS)
    with pytest.raises(QtoolError, match="cannot read image .*a.jpg"):
        decode(tmp_path / "a.jpg", "RGB")
    assert ran == []  # the EPS plugin never saw the file
    for fmt in ("TIFF", "GIF", "WEBP"):
        (tmp_path / f"{fmt}.jpg").write_bytes(pil_bytes(fmt))
        with pytest.raises(QtoolError, match="cannot read image"):
            decode(tmp_path / f"{fmt}.jpg", "RGB")
    for fmt in IMAGE_FORMATS:  # any of the listed ones decodes, whatever the suffix says
        (tmp_path / f"{fmt}.png").write_bytes(pil_bytes(fmt))
        assert decode(tmp_path / f"{fmt}.png", "RGB").size == (8, 8)


# -- files that are not regular files ---------------------------------------------------------


def test_a_stuck_decode_worker_does_not_hold_up_the_reader(tmp_path, monkeypatch):
    """After an error or an interrupt the decode pool is left without waiting for a worker that
    is stuck in a read; the process then exits (cli.main) without joining it."""
    from qtool.io.data import image_files as data_module

    release = threading.Event()
    files = [tmp_path / f"{i}.png" for i in range(6)]

    def load(path, pre):
        if path.name == "1.png":
            release.wait(30)  # a read that does not come back
        if path.name == "0.png":
            raise QtoolError("broken image")
        return np.zeros((3, 8, 8), np.float32)

    monkeypatch.setattr(data_module, "load_image", load)
    monkeypatch.setattr(data_module.os, "cpu_count", lambda: 4)
    start = time.monotonic()
    try:
        with pytest.raises(QtoolError, match="broken image"):
            list(data_module.decode_ahead(files, None, 1))
        assert time.monotonic() - start < 10
    finally:
        release.set()  # let the worker end: no thread outlives the test


# -- resource caps ----------------------------------------------------------------------------

def test_a_zip_bomb_in_the_data_is_refused_before_it_is_decompressed(tmp_path):
    spec = InputSpec("x", np.dtype(np.float32), ("N", 2, 6, 6))
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive, \
            archive.open("x.npy", "w", force_zip64=True) as member:
        np.lib.format.write_array_header_1_0(
            member, {"descr": "<f4", "fortran_order": False, "shape": (1 << 28, 2, 6, 6)})
        member.write(b"\0" * (1 << 20))  # compresses to a few KiB
    assert path.stat().st_size < 64 << 10
    with pytest.raises(QtoolError, match=r"above the cap of \d+; raise \[limits\] data_file_bytes"):
        open_data(path, [spec], num_samples=8)
    np.savez_compressed(tmp_path / "ok.npz", x=np.zeros((64, 2, 6, 6), np.float32))
    limits.configure({"data_file_bytes": 4096})
    with pytest.raises(QtoolError, match="data_file_bytes"):
        open_data(tmp_path / "ok.npz", [spec])
    limits.configure({"data_file_bytes": "1 MiB"})
    assert open_data(tmp_path / "ok.npz", [spec]).num_samples == 64


def sparse_model(dims) -> onnx.ModelProto:
    values = numpy_helper.from_array(np.ones(1, np.float32), "w")
    indices = numpy_helper.from_array(np.zeros(1, np.int64), "w_idx")
    sparse = helper.make_sparse_tensor(values, indices, dims)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)])
    graph.sparse_initializer.append(sparse)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_sparse_initializers_count_their_dense_size(tmp_path):
    save(sparse_model([1 << 30]), tmp_path / "big.onnx")  # 4 GiB dense in ~100 bytes
    assert (tmp_path / "big.onnx").stat().st_size < 200
    with pytest.raises(QtoolError, match=r"sparse tensors take 4294967296 bytes once dense, above "
                                         r"the cap .*raise \[limits\] sparse_bytes"):
        load_model(tmp_path / "big.onnx")
    save(sparse_model([16]), tmp_path / "small.onnx")
    load_model(tmp_path / "small.onnx")


def test_only_the_calibrations_own_members_are_read_from_its_npz(tmp_path, qtool, monkeypatch):
    from qtool.calib.calibfile import read_calibration

    save(conv_relu_gemm(), tmp_path / "net.onnx")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(4, 2, 6, 6)).astype(np.float32))
    assert qtool("calibrate", tmp_path / "net.onnx", "--data", tmp_path / "x.npy", "--method",
                 "entropy", "-q").code == 0
    calib = read_calibration(tmp_path / "net.calib.json")
    npz = tmp_path / "net.calib.npz"
    # an extra member the calibration does not name, claiming 2 GiB: never read
    with zipfile.ZipFile(npz, "a", zipfile.ZIP_DEFLATED) as archive, \
            archive.open("junk.npy", "w", force_zip64=True) as member:
        np.lib.format.write_array_header_1_0(
            member, {"descr": "<f8", "fortran_order": False, "shape": (1 << 28,)})
    calib.histogram_sha256 = None
    read = []
    real = np.lib.format.read_array
    monkeypatch.setattr(np.lib.format, "read_array", lambda fp, **k: read.append(fp.name) or real(fp, **k))
    assert set(calib.load_histograms()) == set(calib.tensors)
    assert read and not any("junk" in name for name in read)
    # a named member larger than the header's bins allow is refused before it is read
    key = next(iter(calib.tensors.values())).key
    with pytest.warns(UserWarning, match="Duplicate name"), \
            zipfile.ZipFile(npz, "a", zipfile.ZIP_DEFLATED) as archive, \
            archive.open(f"{key}/counts.npy", "w", force_zip64=True) as member:
        np.lib.format.write_array_header_1_0(
            member, {"descr": "<i8", "fortran_order": False, "shape": (1 << 28,)})
    read.clear()
    with pytest.raises(QtoolError, match="more than 2048 bins can need"):
        calib.load_histograms()
    assert read == []


# -- former tracebacks ------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["entropy", "percentile", "mse", "coverage", "max"])
def test_histogram_counts_past_2_to_the_53_are_one_line(method):
    from qtool.thresholds import compute_amax

    counts = np.full(2048, 1 << 52, np.int64)
    with pytest.raises(QtoolError, match="more than 2\\*\\*53"):
        compute_amax(method, counts, np.linspace(0, 10, 2049), abs_max=10.0)


