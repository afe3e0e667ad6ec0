"""Fuzzing of the hostile-input classes: image files of every kind under image names, data
archives whose headers ask for huge arrays, sparse initializers, calibration archives with extra
or oversized members, TensorRT cache names, deep nesting, huge histogram counts and output paths
aimed at inputs and special files. Each case must succeed or end in a one-line QtoolError.

Budget as in test_fuzz_loading: a few hundred derandomised cases in the suite; `make fuzz`
(QTOOL_FUZZ_LONG=1) runs 1,250 per target, 10,000 in all, randomly seeded.
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from qtool import limits
from qtool.calib.calibfile import read_calibration
from qtool.calib.calibfile.paths import calibration_files
from qtool.calib.trtcache import format_cache, read_cache
from qtool.config import load_config
from qtool.io.data import open_data
from qtool.io.images import decode
from qtool.io.model import InputSpec, load_model
from qtool.io.outputs import guard_outputs
from qtool.thresholds import compute_amax
from tests.helpers.fuzzing import Tally, fuzz_settings, mutated
from tests.tiny_models import conv_relu_gemm, save

LONG_CASES = 1250


@pytest.fixture(autouse=True)
def small_caps():
    """Caps low enough that a case asking for more is refused in microseconds."""
    limits.configure({"data_file_bytes": "64 MiB", "sparse_bytes": "64 MiB"})
    yield
    limits.configure(None)


def image_seeds() -> list[bytes]:
    from PIL import Image

    seeds = []
    for fmt in ("PNG", "JPEG", "BMP", "GIF", "TIFF"):
        buffer = io.BytesIO()
        Image.new("RGB", (6, 5), (200, 10, 30)).save(buffer, format=fmt)
        seeds.append(buffer.getvalue())
    seeds.append(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n")
    return seeds


def test_fuzz_images_of_any_kind(scratch):
    tally = Tally("images")
    path = scratch / "a.jpg"

    @fuzz_settings(ci=150, long=LONG_CASES)
    @given(st.sampled_from(image_seeds()).flatmap(mutated))
    def case(data):
        path.write_bytes(data)
        tally.run(decode, path, "RGB")

    case()
    print(tally.report())


def test_fuzz_data_archives_asking_for_huge_arrays(scratch):
    tally = Tally("npz headers")
    spec = InputSpec("x", np.dtype(np.float32), ("N", 2, 3))
    path = scratch / "d.npz"

    shapes = st.one_of(st.lists(st.integers(0, 2**40), min_size=0, max_size=4),
                       st.tuples(st.integers(0, 64), st.just(2), st.just(3)).map(list))

    @fuzz_settings(ci=150, long=LONG_CASES)
    @given(shapes,
           st.sampled_from(["<f4", "<f8", "<i8", "|u1", "<f2"]),
           st.one_of(st.integers(0, 4096), st.none()), st.booleans())
    def case(shape, descr, payload, compressed):
        method = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
        with zipfile.ZipFile(path, "w", method) as archive, \
                archive.open("x.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(
                member, {"descr": descr, "fortran_order": False, "shape": tuple(shape)})
            if payload is None:  # exactly the bytes the header asks for, when that is small
                payload = min(math.prod(shape) * np.dtype(descr).itemsize, 1 << 20)
            member.write(b"\0" * payload)

        def exercise(p):
            for _ in open_data(p, [spec], num_samples=4):
                pass

        tally.run(exercise, path)

    case()
    print(tally.report())


def test_fuzz_sparse_initializers(scratch):
    tally = Tally("sparse initializers")
    path = scratch / "s.onnx"

    @fuzz_settings(ci=150, long=LONG_CASES)
    @given(st.lists(st.integers(-2, 2**34), min_size=1, max_size=3), st.integers(0, 4),
           st.sampled_from([TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT8, 0, 99]))
    def case(dims, count, data_type):
        values = TensorProto(name="w", data_type=data_type, dims=[count])
        values.raw_data = b"\0" * (4 * count)
        indices = numpy_helper.from_array(np.arange(count, dtype=np.int64), "w_idx")
        sparse = helper.make_sparse_tensor(values, indices, dims)
        graph = helper.make_graph(
            [helper.make_node("Identity", ["w"], ["y"])], "g", [],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [f"d{i}" for i in range(len(dims))])])
        graph.sparse_initializer.append(sparse)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        path.write_bytes(model.SerializeToString())
        tally.run(load_model, path)

    case()
    print(tally.report())


def test_fuzz_calibration_archives_with_extra_members(scratch, tmp_path_factory):
    from qtool.cli.main import main

    tally = Tally("calibration members")
    folder = tmp_path_factory.mktemp("calib")
    save(conv_relu_gemm(), folder / "net.onnx")
    np.save(folder / "x.npy", np.random.default_rng(0).normal(size=(4, 2, 6, 6)).astype(np.float32))
    with pytest.raises(SystemExit) as info:
        main(["calibrate", str(folder / "net.onnx"), "--data", str(folder / "x.npy"),
              "--method", "entropy", "-q"])
    assert info.value.code == 0
    record = json.loads((folder / "net.calib.json").read_text())
    record["histograms"] = {"file": "c.npz", "sha256": None}  # the members are fuzzed, not the hash
    (scratch / "c.json").write_text(json.dumps(record))
    seed = (folder / "net.calib.npz").read_bytes()
    keys = [entry["key"] for entry in record["tensors"].values() if entry.get("key")]

    @fuzz_settings(ci=150, long=LONG_CASES)
    @given(st.sampled_from(keys + ["junk", "t999"]), st.sampled_from(["counts", "sum", "x"]),
           st.lists(st.integers(0, 2**40), max_size=3), st.sampled_from(["<i8", "<f8", "|u1"]))
    def case(key, part, shape, descr):
        (scratch / "c.npz").write_bytes(seed)
        with zipfile.ZipFile(scratch / "c.npz", "a") as archive, \
                archive.open(f"{key}/{part}.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(
                member, {"descr": descr, "fortran_order": False, "shape": tuple(shape)})
            member.write(b"\0" * 64)

        def exercise(_):
            read_calibration(scratch / "c.json").load_stored()

        tally.run(exercise, None)

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile: duplicate member names
        case()
    print(tally.report())


def test_fuzz_trt_cache_names(scratch):
    tally = Tally("cache names")
    path = scratch / "n.cache"
    chars = st.sampled_from(list("ab: \t\n\r\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029é"))

    @fuzz_settings(ci=150, long=LONG_CASES)
    @given(st.lists(st.text(chars, max_size=6), max_size=4), st.booleans())
    def case(names, duplicate):
        lines = ["TRT-100300-EntropyCalibration2"] + [f"{name}: 3f800000" for name in names]
        if duplicate and names:
            lines.append(lines[-1])
        path.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="")

        def exercise(p):
            _, scales = read_cache(p)
            written = scratch / "w.cache"
            written.write_text(format_cache({n: s * 127 for n, s in scales.items()}),
                               encoding="utf-8", newline="")
            assert read_cache(written)[1] == scales  # whatever is accepted round-trips

        tally.run(exercise, path)
        tally.run(lambda _: format_cache(dict.fromkeys(names, 1.0)), None)

    case()
    print(tally.report())


def test_fuzz_deep_nesting(scratch):
    tally = Tally("nesting")

    @fuzz_settings(ci=60, long=LONG_CASES)
    @given(st.integers(1, 200000), st.sampled_from(["[", "{\"a\": "]))
    def case(depth, opener):
        closer = "]" if opener == "[" else "}"
        (scratch / "n.json").write_text(opener * depth + "1" + closer * depth)
        (scratch / "n.toml").write_text("a = " + "[" * depth + "]" * depth + "\n")
        tally.run(read_calibration, scratch / "n.json")
        tally.run(load_config, scratch / "n.toml")

    case()
    print(tally.report())


def test_fuzz_huge_histogram_counts():
    tally = Tally("huge counts")
    edges = np.linspace(0, 4, 257)

    @fuzz_settings(ci=150, long=LONG_CASES)
    @given(st.lists(st.integers(0, 2**63 - 1), min_size=256, max_size=256),
           st.sampled_from(["entropy", "percentile", "mse", "coverage", "max"]))
    def case(counts, method):
        tally.run(lambda: compute_amax(method, np.array(counts, np.int64), edges, abs_max=4.0))

    case()
    print(tally.report())


def test_fuzz_output_paths(tmp_path_factory):
    tally = Tally("output paths")
    root = tmp_path_factory.mktemp("guard")
    save(conv_relu_gemm(), root / "net.onnx")
    (root / "data").mkdir()
    np.save(root / "data" / "a.npy", np.ones((1, 2, 6, 6), np.float32))
    (root / "c.toml").write_text("")
    os.mkfifo(root / "fifo")
    os.symlink(root / "net.onnx", root / "link.onnx")
    parts = st.sampled_from(["net.onnx", "data", "a.npy", "c.toml", "fifo", "link.onnx", "new",
                             "..", ".", "x" * 300, "out.json", "net.calib.npz"])

    @fuzz_settings(ci=150, long=LONG_CASES)
    @given(st.lists(st.lists(parts, min_size=1, max_size=4), min_size=1, max_size=3))
    def case(paths):
        outputs = [root.joinpath(*path) for path in paths]
        tally.run(lambda: guard_outputs(outputs, models=[root / "net.onnx"],
                                        calibrations=calibration_files(root / "net.calib.json"),
                                        inputs=[root / "data", root / "c.toml"]))

    case()
    print(tally.report())
    assert sorted(p.name for p in root.iterdir()) == ["c.toml", "data", "fifo", "link.onnx",
                                                      "net.onnx"]  # the guard writes nothing
