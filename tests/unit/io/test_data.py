"""Data readers: .npy/.npz files and folders, loader scripts, re-batching and validation."""

from __future__ import annotations

import logging
import pickle
import textwrap

import numpy as np
import pytest

from qtool.errors import QtoolError, UsageError
from qtool.io.data import list_data_files, open_data
from qtool.io.model import InputSpec

F32 = np.dtype(np.float32)
I64 = np.dtype(np.int64)
IMAGE = [InputSpec("x", F32, ("N", 3, 4, 4))]
SEQ = [InputSpec("input_ids", I64, ("batch", "seq")), InputSpec("attention_mask", I64, ("batch", "seq"))]


def arange(n, shape=(3, 4, 4), start=0):
    return (np.arange(n * int(np.prod(shape)), dtype=np.float32) + start).reshape((n,) + shape)


def batches(source):
    return [feed for feed in source]


# -- .npy ----------------------------------------------------------------------------------------

def test_npy_file_is_one_batch(tmp_path):
    data = arange(5)
    np.save(tmp_path / "a.npy", data)
    source = open_data(tmp_path / "a.npy", IMAGE)
    out = batches(source)
    assert len(out) == 1 and list(out[0]) == ["x"]
    np.testing.assert_array_equal(out[0]["x"], data)
    assert out[0]["x"].dtype == np.float32
    assert (source.kind, source.num_samples, source.num_batches, source.batch_size) == ("npy", 5, 1, None)
    assert source.sample_files() is None
    assert "1 .npy file" in source.describe() and "5 samples" in source.describe()


def test_npy_sample_without_batch_axis_gets_one(tmp_path):
    sample = arange(1)[0]
    np.save(tmp_path / "s.npy", sample)
    (feed,) = batches(open_data(tmp_path / "s.npy", IMAGE))
    assert feed["x"].shape == (1, 3, 4, 4)
    np.testing.assert_array_equal(feed["x"][0], sample)


def test_folder_is_recursive_sorted_and_skips_hidden_and_other_files(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a.b").mkdir()
    (tmp_path / ".cache").mkdir()
    layout = {"b/z.npy": 1, "a.b/y.npy": 2, "b.npy": 3, "B.npy": 4, ".cache/h.npy": 99, ".h.npy": 98}
    for name, value in layout.items():
        np.save(tmp_path / name, np.full((1, 3, 4, 4), value, np.float32))
    (tmp_path / "labels.txt").write_text("0\n")
    (tmp_path / "README").write_text("calibration set\n")
    kind, files = list_data_files(tmp_path)
    assert kind == "npy"
    # component by component, code-point order: "B.npy" < "a.b/..." < "b/..." < "b.npy"
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["B.npy", "a.b/y.npy", "b/z.npy", "b.npy"]
    values = [feed["x"][0, 0, 0, 0] for feed in open_data(tmp_path, IMAGE)]
    assert values == [4, 2, 1, 3]


def test_each_iteration_starts_over(tmp_path):
    for i in range(3):
        np.save(tmp_path / f"{i}.npy", arange(2, start=100 * i))
    source = open_data(tmp_path, IMAGE, batch_size=4)
    first, second = batches(source), batches(source)
    assert len(first) == len(second) == 2
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a["x"], b["x"])


def test_multi_input_model_refuses_npy(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((1, 8), np.int64))
    with pytest.raises(QtoolError, match=r"2 inputs \(input_ids, attention_mask\).*use \.npz"):
        open_data(tmp_path / "a.npy", SEQ)


def test_fortran_order_arrays_come_out_c_contiguous(tmp_path):
    data = np.asfortranarray(arange(2))
    np.save(tmp_path / "f.npy", data)
    (feed,) = batches(open_data(tmp_path / "f.npy", IMAGE))
    assert feed["x"].flags.c_contiguous
    np.testing.assert_array_equal(feed["x"], data)


def test_nan_and_inf_pass_through(tmp_path):
    data = arange(1)
    data[0, 0, 0, :3] = [np.nan, np.inf, -np.inf]
    np.save(tmp_path / "n.npy", data)
    (feed,) = batches(open_data(tmp_path / "n.npy", IMAGE))
    np.testing.assert_array_equal(feed["x"], data)  # NaN compare equal in assert_array_equal


# -- .npz ----------------------------------------------------------------------------------------

def test_npz_keyed_by_input_name_ignores_other_keys(tmp_path, caplog):
    ids = np.arange(12, dtype=np.int64).reshape(2, 6)
    mask = np.ones((2, 6), np.int64)
    np.savez(tmp_path / "a.npz", attention_mask=mask, input_ids=ids, labels=np.array([3, 4]))
    with caplog.at_level(logging.DEBUG, logger="qtool"):
        source = open_data(tmp_path / "a.npz", SEQ)
        (feed,) = batches(source)
    assert list(feed) == ["input_ids", "attention_mask"]
    np.testing.assert_array_equal(feed["input_ids"], ids)
    np.testing.assert_array_equal(feed["attention_mask"], mask)
    assert source.num_samples == 2
    assert "ignoring keys that are not model inputs: labels" in caplog.text


def test_npz_extra_keys_are_never_read(tmp_path):
    meta = np.empty(1, dtype=object)
    meta[0] = {"source": "camera 3"}
    np.savez(tmp_path / "a.npz", x=arange(2), meta=meta)  # pickled, but not an input
    (feed,) = batches(open_data(tmp_path / "a.npz", IMAGE))
    np.testing.assert_array_equal(feed["x"], arange(2))


def test_npz_missing_input_names_it_and_the_keys_found(tmp_path):
    np.savez(tmp_path / "a.npz", input_ids=np.zeros((1, 4), np.int64), mask=np.zeros((1, 4), np.int64))
    with pytest.raises(QtoolError) as info:
        open_data(tmp_path / "a.npz", SEQ)
    assert str(info.value) == (f"{tmp_path / 'a.npz'}: missing model input 'attention_mask' "
                               f"(found keys: 'input_ids', 'mask')")


def test_npz_arrays_must_share_the_batch_axis(tmp_path):
    np.savez(tmp_path / "a.npz", input_ids=np.zeros((2, 4), np.int64),
             attention_mask=np.zeros((3, 4), np.int64))
    with pytest.raises(QtoolError) as info:
        open_data(tmp_path / "a.npz", SEQ)
    assert str(info.value) == (
        f"{tmp_path / 'a.npz'}: the inputs hold different numbers of samples (input_ids 2 on "
        f"axis 0, attention_mask 3 on axis 0); if an input is not batched or keeps its samples "
        f"on another axis, set [inputs.NAME] batch_axis in the config")


def test_dynamic_dims_may_change_per_batch(tmp_path):
    for i, seq in enumerate((4, 7)):
        np.savez(tmp_path / f"{i}.npz", input_ids=np.full((2, seq), i, np.int64),
                 attention_mask=np.ones((2, seq), np.int64))
    shapes = [feed["input_ids"].shape for feed in open_data(tmp_path, SEQ)]
    assert shapes == [(2, 4), (2, 7)]


def test_rebatching_refuses_samples_of_different_dynamic_size(tmp_path):
    for i, seq in enumerate((4, 7)):
        np.savez(tmp_path / f"{i}.npz", input_ids=np.zeros((1, seq), np.int64),
                 attention_mask=np.ones((1, seq), np.int64))
    source = open_data(tmp_path, SEQ, batch_size=2)
    with pytest.raises(QtoolError, match=r"cannot batch .*0\.npz with .*1\.npz: input 'input_ids' "
                                         r"has shape \(1, 4\) and \(1, 7\) beyond batch axis 0"):
        batches(source)


# -- re-batching and counting ---------------------------------------------------------------------

def _files(tmp_path, sizes):
    start = 0
    for i, n in enumerate(sizes):
        np.save(tmp_path / f"{i:02d}.npy", arange(n, start=start))
        start += n * 48
    return arange(sum(sizes))


@pytest.mark.parametrize("sizes, batch_size, num_samples, expected", [
    ([3, 5, 2], 4, None, [4, 4, 2]),
    ([3, 5, 2], 4, 7, [4, 3]),
    ([3, 5, 2], 1, 3, [1, 1, 1]),
    ([3, 5, 2], None, 4, [3, 1]),
    ([3, 5, 2], None, None, [3, 5, 2]),
    ([3, 5, 2], None, 50, [3, 5, 2]),
    ([2, 2, 2], 6, None, [6]),
    ([6], 2, None, [2, 2, 2]),
])
def test_rebatch_keeps_sample_order(tmp_path, sizes, batch_size, num_samples, expected):
    everything = _files(tmp_path, sizes)
    source = open_data(tmp_path, IMAGE, batch_size=batch_size, num_samples=num_samples)
    out = batches(source)
    assert [feed["x"].shape[0] for feed in out] == expected
    np.testing.assert_array_equal(np.concatenate([feed["x"] for feed in out]), everything[: sum(expected)])
    assert source.num_samples == sum(expected)
    assert source.num_batches == len(expected)
    assert source.available_samples == sum(sizes)


def test_num_samples_stops_reading_files(tmp_path, monkeypatch):
    _files(tmp_path, [2, 2, 2, 2])
    source = open_data(tmp_path, IMAGE, batch_size=3, num_samples=3)
    from qtool.io import arrays

    loaded = []
    real = arrays.load_npy
    monkeypatch.setattr(arrays, "load_npy", lambda path: loaded.append(path.name) or real(path))
    assert [feed["x"].shape[0] for feed in source] == [3]
    assert loaded == ["00.npy", "01.npy"]


def test_fixed_batch_axis_rebatches_and_drops_the_remainder(tmp_path, caplog):
    spec = [InputSpec("x", F32, (2, 3, 4, 4))]
    everything = _files(tmp_path, [3, 2])
    with caplog.at_level(logging.WARNING, logger="qtool"):
        source = open_data(tmp_path, spec)
    assert "dropping the last 1 sample(s): the model's batch axis is fixed at 2" in caplog.text
    out = batches(source)
    assert [feed["x"].shape[0] for feed in out] == [2, 2]
    np.testing.assert_array_equal(np.concatenate([f["x"] for f in out]), everything[:4])
    assert (source.batch_size, source.num_samples, source.num_batches) == (2, 4, 2)
    assert batches(open_data(tmp_path, spec, batch_size=2))[0]["x"].shape == (2, 3, 4, 4)


def test_batch_size_conflicting_with_fixed_batch_axis(tmp_path):
    _files(tmp_path, [4])
    spec = [InputSpec("x", F32, (1, 3, 4, 4))]
    with pytest.raises(QtoolError, match=r"batch size 8 conflicts with the model's fixed batch axis: "
                                         r"input 'x' is \[1,3,4,4\]"):
        open_data(tmp_path, spec, batch_size=8)


def test_fewer_samples_than_the_fixed_batch(tmp_path):
    _files(tmp_path, [3])
    with pytest.raises(QtoolError, match=r"holds 3 sample\(s\), fewer than the model's fixed batch size 4"):
        open_data(tmp_path, [InputSpec("x", F32, (4, 3, 4, 4))])


def test_inputs_without_a_shared_batch_axis_take_feeds_as_given(tmp_path):
    specs = [InputSpec("a", F32, (1, 3)), InputSpec("b", F32, (4,))]
    np.savez(tmp_path / "0.npz", a=np.zeros((1, 3), np.float32), b=np.arange(4, dtype=np.float32))
    source = open_data(tmp_path, specs)
    (feed,) = batches(source)
    assert feed["b"].shape == (4,) and source.num_samples == 1
    with pytest.raises(QtoolError, match="share no batch axis"):
        open_data(tmp_path, specs, batch_size=2)


def test_scalar_inputs_go_whole_with_every_batch(tmp_path):
    specs = [InputSpec("x", F32, ("n", 2)), InputSpec("t", F32, ())]
    np.savez(tmp_path / "0.npz", x=np.zeros((3, 2), np.float32), t=np.float32(0.5))
    np.savez(tmp_path / "1.npz", x=np.ones((1, 2), np.float32), t=np.float32(0.5))
    first, second = batches(open_data(tmp_path, specs))
    assert first["t"].shape == () and first["x"].shape == (3, 2) and second["x"].shape == (1, 2)
    source = open_data(tmp_path, specs, batch_size=2)
    assert source.num_batches == 2
    joined = batches(source)
    assert [feed["x"].shape for feed in joined] == [(2, 2), (2, 2)]
    assert all(feed["t"] == np.float32(0.5) and feed["t"].shape == () for feed in joined)
    np.testing.assert_array_equal(joined[1]["x"], [[0, 0], [1, 1]])


def test_scalar_inputs_that_differ_are_never_joined(tmp_path):
    specs = [InputSpec("x", F32, ("n", 2)), InputSpec("t", F32, ())]
    np.savez(tmp_path / "0.npz", x=np.zeros((1, 2), np.float32), t=np.float32(0.5))
    np.savez(tmp_path / "1.npz", x=np.zeros((1, 2), np.float32), t=np.float32(0.25))
    with pytest.raises(QtoolError) as info:
        batches(open_data(tmp_path, specs, batch_size=2))
    assert str(info.value) == (
        f"cannot batch {tmp_path / '0.npz'} with {tmp_path / '1.npz'}: input 't' is not batched "
        f"and has a different value in each; give whole batches (leave the batch size unset), or "
        f"set its batch axis with [inputs.t] batch_axis in the config")


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"num_samples": -1}, {"batch_size": True},
                                    {"batch_size": 2.0}])
def test_counts_must_be_positive_integers(tmp_path, kwargs):
    _files(tmp_path, [1])
    with pytest.raises(UsageError, match="must be a positive integer"):
        open_data(tmp_path, IMAGE, **kwargs)


# -- validation messages --------------------------------------------------------------------------

def test_dtype_mismatch_is_reported_before_reading_data(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((2, 3, 4, 4)))
    with pytest.raises(QtoolError) as info:
        open_data(tmp_path / "a.npy", IMAGE)
    assert str(info.value) == (f"{tmp_path / 'a.npy'}: input 'x' expects float32 [N,3,4,4], found "
                               f"float64 (2, 3, 4, 4); convert it with .astype(np.float32)")


def test_int32_data_for_an_int64_input_is_refused(tmp_path):
    np.savez(tmp_path / "a.npz", input_ids=np.zeros((1, 4), np.int32),
             attention_mask=np.zeros((1, 4), np.int64))
    with pytest.raises(QtoolError, match=r"input 'input_ids' expects int64 \[batch,seq\], found int32 \(1, 4\)"):
        open_data(tmp_path / "a.npz", SEQ)


def test_static_dimension_mismatch_names_the_axis(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((2, 3, 5, 4), np.float32))
    with pytest.raises(QtoolError) as info:
        open_data(tmp_path / "a.npy", IMAGE)
    assert str(info.value) == (f"{tmp_path / 'a.npy'}: input 'x' axis 2 expects 4, found 5 "
                               f"(expects float32 [N,3,4,4], found float32 (2, 3, 5, 4))")


def test_rank_mismatch(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((3, 4), np.float32))
    with pytest.raises(QtoolError, match=r"input 'x' expects float32 rank 4 \[N,3,4,4\] \(or rank 3 for a "
                                         r"single sample\), found rank 2 float32 \(3, 4\)"):
        open_data(tmp_path / "a.npy", IMAGE)


def test_zero_samples_is_an_error(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((0, 3, 4, 4), np.float32))
    with pytest.raises(QtoolError, match="a.npy: holds zero samples"):
        open_data(tmp_path, IMAGE)


# -- bad files -----------------------------------------------------------------------------------

class _Sentinel:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickled_arrays_are_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled"
    array = np.empty(1, dtype=object)
    array[0] = _Sentinel(str(marker))
    np.save(tmp_path / "evil.npy", array, allow_pickle=True)
    np.savez(tmp_path / "evil.npz", x=array)
    assert not marker.exists()
    with pytest.raises(QtoolError, match="evil.npy holds Python objects"):
        open_data(tmp_path / "evil.npy", IMAGE)
    with pytest.raises(QtoolError, match=r"evil.npz \[x\] holds Python objects"):
        open_data(tmp_path / "evil.npz", IMAGE)
    assert not marker.exists()
    assert pickle.dumps(1)  # pickle itself still works: nothing was patched


@pytest.mark.parametrize("name, content, message", [
    ("bad.npy", b"not an array at all", r"bad.npy is not a readable .npy array"),
    ("bad.npz", b"PK\x03\x04 garbage", r"bad.npz is not a readable .npz archive"),
    ("text.npz", b"hello", r"text.npz is not a readable .npz archive"),
])
def test_corrupt_files_name_the_file(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(QtoolError, match=message):
        open_data(tmp_path / name, IMAGE)


def test_truncated_npy_fails_when_read(tmp_path):
    np.save(tmp_path / "t.npy", arange(4))
    raw = (tmp_path / "t.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(raw[: len(raw) - 100])
    source = open_data(tmp_path / "t.npy", IMAGE)  # the header is intact
    with pytest.raises(QtoolError, match=r"cannot load .*t.npy as a .npy array"):
        batches(source)


def test_paths_that_hold_no_data(tmp_path):
    with pytest.raises(QtoolError, match="data not found"):
        open_data(tmp_path / "nope", IMAGE)
    (tmp_path / "labels.txt").write_text("1\n")
    with pytest.raises(QtoolError, match=f"no data files found in {tmp_path}"):
        open_data(tmp_path, IMAGE)
    with pytest.raises(QtoolError, match="unsupported data file .*labels.txt"):
        open_data(tmp_path / "labels.txt", IMAGE)
    np.save(tmp_path / "a.npy", arange(1))
    np.savez(tmp_path / "b.npz", x=arange(1))
    with pytest.raises(QtoolError, match=r"mixes kinds of data files \(1 npy, 1 npz\)"):
        open_data(tmp_path, IMAGE)


def test_path_and_loader_script_are_exclusive(tmp_path):
    with pytest.raises(UsageError, match="either a data path or a loader script"):
        open_data(tmp_path, IMAGE, loader_script="load.py")
    with pytest.raises(UsageError, match="no data given"):
        open_data(None, IMAGE)


def test_preprocess_is_checked_even_for_arrays(tmp_path):
    _files(tmp_path, [1])
    with pytest.raises(QtoolError, match="unknown \\[preprocess\\] key rezise"):
        open_data(tmp_path, IMAGE, preprocess={"rezise": 3})
    assert len(batches(open_data(tmp_path, IMAGE, preprocess={"resize": 3}))) == 1


# -- loader scripts -------------------------------------------------------------------------------

def _script(tmp_path, body, name="load.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


def test_loader_script_generator_is_called_again_each_pass(tmp_path):
    script = _script(tmp_path, """
        import numpy as np
        calls = []

        def load_data():
            calls.append(1)
            for i in range(3):
                yield {"x": np.full((2, 3, 4, 4), len(calls) * 10 + i, np.float32), "label": i}
    """)
    source = open_data(None, IMAGE, loader_script=script)
    assert (source.kind, source.num_samples, source.num_batches) == ("script", None, None)
    first = [feed["x"][0, 0, 0, 0] for feed in source]
    second = [feed["x"][0, 0, 0, 0] for feed in source]
    assert first == [10, 11, 12]  # the generator checked at open is the first pass
    assert second == [20, 21, 22]
    assert "loader script" in source.describe() and "load_data()" in source.describe()


def test_loader_script_list_is_counted_and_reused(tmp_path):
    script = _script(tmp_path, """
        import numpy as np

        def feeds():
            return [{"x": np.zeros((n, 3, 4, 4), np.float32)} for n in (1, 2, 3)]
    """)
    source = open_data(None, IMAGE, loader_script=script + ":feeds", batch_size=4)
    assert (source.num_samples, source.num_batches, source.available_samples) == (6, 2, 6)
    assert [feed["x"].shape[0] for feed in source] == [4, 2]
    assert [feed["x"].shape[0] for feed in source] == [4, 2]


def test_loader_script_can_import_its_neighbours(tmp_path):
    _script(tmp_path, """
        import numpy as np
        VALUE = np.float32(7)
    """, name="helper_mod_for_qtool.py")
    script = _script(tmp_path, """
        import numpy as np
        from helper_mod_for_qtool import VALUE

        def load_data():
            return [{"x": np.full((3, 4, 4), VALUE, np.float32)}]
    """)
    (feed,) = batches(open_data(None, IMAGE, loader_script=script))
    assert feed["x"].shape == (1, 3, 4, 4) and feed["x"][0, 0, 0, 0] == 7


@pytest.mark.parametrize("body, message", [
    ("def other():\n    return []\n", r"defines no function load_data\(\)"),
    ("load_data = 3\n", "load_data is a int, not a function"),
    ("def load_data():\n    return 5\n", r"load_data\(\) returned a int; it must return an iterable"),
    ("def load_data():\n    return []\n", "gave no data"),
    ("def load_data():\n    yield [1, 2]\n",
     r"item 0 of .*load_data\(\): expected a dict of input name -> array, found a list"),
    ("def load_data():\n    yield {'y': 1}\n", r"item 0 of .*: missing model input 'x' \(found keys: 'y'\)"),
    ("def load_data():\n    yield {'x': [1.0]}\n", "input 'x' is a list, not a numpy array"),
    (("import numpy as np\ndef load_data():\n    yield {'x': np.zeros((1, 3, 4, 4), np.float32)}\n"
      "    yield {'x': np.zeros((1, 3, 4, 5), np.float32)}\n"),
     r"item 1 of .*: input 'x' axis 3 expects 4, found 5"),
])
def test_loader_script_mistakes(tmp_path, body, message):
    script = _script(tmp_path, body)
    with pytest.raises(QtoolError, match=message):
        source = open_data(None, IMAGE, loader_script=script)
        batches(source)


def test_loader_script_exception_points_at_its_line(tmp_path):
    script = _script(tmp_path, """
        def load_data():
            yield from ()
            raise ValueError("no such folder: /data/calib")
    """)
    with pytest.raises(QtoolError) as info:
        open_data(None, IMAGE, loader_script=script)
    assert str(info.value) == (f"loader script {script} failed while producing item 0 of load_data() "
                               f"at {script}:4: ValueError: no such folder: /data/calib "
                               f"(run with -vv for the traceback)")


def test_loader_script_top_level_error_and_missing_file(tmp_path):
    script = _script(tmp_path, "import numpy as np\n1 / 0\n")
    with pytest.raises(QtoolError, match=r"failed while running its top level at .*load.py:2: ZeroDivisionError"):
        open_data(None, IMAGE, loader_script=script)
    with pytest.raises(QtoolError, match="loader script not found"):
        open_data(None, IMAGE, loader_script=str(tmp_path / "missing.py"))


def test_loader_script_with_fixed_batch_warns_when_dropping(tmp_path, caplog):
    script = _script(tmp_path, """
        import numpy as np

        def load_data():
            for i in range(5):
                yield {"x": np.full((1, 3, 4, 4), i, np.float32)}
    """)
    source = open_data(None, [InputSpec("x", F32, (2, 3, 4, 4))], loader_script=script)
    with caplog.at_level(logging.WARNING, logger="qtool"):
        out = batches(source)
    assert [feed["x"][:, 0, 0, 0].tolist() for feed in out] == [[0, 1], [2, 3]]
    assert "dropped the last 1 sample(s)" in caplog.text


# -- inputs batched on other axes, unbatched inputs, files cut into batches ------------------------

STATE = [InputSpec("x", F32, ("batch", 16)), InputSpec("state", F32, (2, "batch", 8)),
         InputSpec("sr", I64, ())]


def _state_files(folder, count, sr=16000, sample_axis=True):
    """One .npz per sample; with sample_axis=False the arrays leave the batch axis out."""
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(3)
    xs = rng.normal(size=(count, 16)).astype(np.float32)
    states = rng.normal(size=(2, count, 8)).astype(np.float32)
    for i in range(count):
        x, state = (xs[i:i + 1], states[:, i:i + 1]) if sample_axis else (xs[i], states[:, i])
        np.savez(folder / f"{i:03d}.npz", x=x, state=state, sr=np.array(sr, np.int64))
    return xs, states


@pytest.mark.parametrize("sample_axis", [True, False])
def test_state_on_axis_1_is_joined_along_axis_1(tmp_path, sample_axis):
    xs, states = _state_files(tmp_path, 5, sample_axis=sample_axis)
    source = open_data(tmp_path, STATE, batch_size=2)
    assert (source.num_samples, source.num_batches) == (5, 3)
    out = batches(source)
    assert [(f["x"].shape, f["state"].shape, f["sr"].shape) for f in out] == [
        ((2, 16), (2, 2, 8), ()), ((2, 16), (2, 2, 8), ()), ((1, 16), (2, 1, 8), ())]
    np.testing.assert_array_equal(np.concatenate([f["x"] for f in out]), xs)
    np.testing.assert_array_equal(np.concatenate([f["state"] for f in out], axis=1), states)
    assert all(f["sr"] == 16000 and f["state"].flags.c_contiguous for f in out)
    assert "batch axis: x 0, state 1, sr none" in source.describe()


def test_state_files_without_batch_size_are_one_batch_each(tmp_path):
    _xs, states = _state_files(tmp_path, 3)
    out = batches(open_data(tmp_path, STATE))
    assert [f["state"].shape for f in out] == [(2, 1, 8)] * 3
    np.testing.assert_array_equal(out[2]["state"], states[:, 2:3])


def test_state_checked_on_its_own_batch_axis(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.zeros((2, 16), np.float32),
             state=np.zeros((2, 3, 8), np.float32), sr=np.array(16000))
    with pytest.raises(QtoolError) as info:
        open_data(tmp_path / "a.npz", STATE)
    assert str(info.value) == (
        f"{tmp_path / 'a.npz'}: the inputs hold different numbers of samples (x 2 on axis 0, "
        f"state 3 on axis 1); if an input is not batched or keeps its samples on another axis, "
        f"set [inputs.NAME] batch_axis in the config")


def test_fixed_batch_on_axis_1_cuts_files_along_it(tmp_path):
    fixed = [InputSpec("x", F32, (1, 16)), InputSpec("state", F32, (2, 1, 8))]
    state = np.arange(64, dtype=np.float32).reshape(2, 4, 8)
    np.savez(tmp_path / "b.npz", x=np.zeros((4, 16), np.float32), state=state)
    with pytest.raises(QtoolError, match=r"input 'x' axis 0 expects 1, found 4"):
        open_data(tmp_path / "b.npz", fixed)  # static first dimensions disagree: no batch axis
    out = batches(open_data(tmp_path / "b.npz", fixed, inputs={"state": {"batch_axis": 1}}))
    assert [f["state"].shape for f in out] == [(2, 1, 8)] * 4
    np.testing.assert_array_equal(out[3]["state"], state[:, 3:4])


def test_config_batch_axis_none_feeds_an_input_whole(tmp_path):
    specs = [InputSpec("x", F32, ("n", 4)), InputSpec("table", F32, ("n", 3))]
    for i in range(3):
        np.savez(tmp_path / f"{i}.npz", x=np.full((2, 4), i, np.float32),
                 table=np.arange(9, dtype=np.float32).reshape(3, 3))
    with pytest.raises(QtoolError, match="different numbers of samples"):
        open_data(tmp_path, specs)
    source = open_data(tmp_path, specs, inputs={"table": {"batch_axis": "none"}}, batch_size=3)
    out = batches(source)
    assert [f["x"].shape for f in out] == [(3, 4), (3, 4)]
    assert all(f["table"].shape == (3, 3) for f in out)
    np.testing.assert_array_equal(out[1]["x"][:, 0], [1, 2, 2])


@pytest.mark.parametrize("sizes, num_samples, expected", [
    ([20], None, [8, 8, 4]),
    ([10, 12], None, [8, 2, 8, 4]),    # a file's last part is never joined with the next file
    ([10, 12], 13, [8, 2, 3]),
    ([10, 12], 5, [5]),
    ([8, 1], None, [8, 1]),
])
def test_large_files_are_cut_into_batches_of_the_default_size(tmp_path, sizes, num_samples,
                                                                expected):
    from qtool.io.data import FILE_BATCH_SIZE

    assert FILE_BATCH_SIZE == 8
    start = 0
    for index, size in enumerate(sizes):
        np.save(tmp_path / f"{index}.npy", arange(size, shape=(2,), start=start))
        start += 2 * size
    source = open_data(tmp_path, [InputSpec("x", F32, ("N", 2))], num_samples=num_samples)
    out = batches(source)
    assert [len(f["x"]) for f in out] == expected
    assert (source.num_samples, source.num_batches) == (sum(expected), len(expected))
    np.testing.assert_array_equal(np.concatenate([f["x"] for f in out]),
                                  arange(sum(expected), shape=(2,)))
    assert "one batch per file of up to 8 samples" in source.describe()


def test_large_state_file_is_cut_along_each_batch_axis(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 16)).astype(np.float32)
    state = rng.normal(size=(2, 10, 8)).astype(np.float32)
    np.savez(tmp_path / "all.npz", x=x, state=state, sr=np.array(8000))
    out = batches(open_data(tmp_path, STATE))
    assert [(f["x"].shape, f["state"].shape) for f in out] == [((8, 16), (2, 8, 8)),
                                                               ((2, 16), (2, 2, 8))]
    np.testing.assert_array_equal(out[1]["state"], state[:, 8:])
    np.testing.assert_array_equal(out[1]["x"], x[8:])
    assert all(f["sr"] == 8000 for f in out)


def test_loader_items_are_not_cut(tmp_path):
    script = _script(tmp_path, """
        import numpy as np
        def load_data():
            yield {"x": np.zeros((70, 2), np.float32)}
    """)
    out = batches(open_data(None, [InputSpec("x", F32, ("N", 2))], loader_script=script))
    assert [len(f["x"]) for f in out] == [70]


def test_loader_script_state_items_rebatch_on_their_axes(tmp_path):
    script = _script(tmp_path, """
        import numpy as np
        def load_data():
            for i in range(5):
                yield {"x": np.full((1, 16), i, np.float32),
                       "state": np.full((2, 1, 8), i, np.float32), "sr": np.int64(16000)}
    """)
    out = batches(open_data(None, STATE, loader_script=script, batch_size=4))
    assert [f["state"].shape for f in out] == [(2, 4, 8), (2, 1, 8)]
    np.testing.assert_array_equal(out[0]["state"][1, :, 0], [0, 1, 2, 3])


def test_images_without_a_preprocess_table_are_refused(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((5, 7, 3), np.uint8)).save(tmp_path / "a.png")
    spec = [InputSpec("images", F32, ("batch", 3, 640, 640))]
    for preprocess in (None, {}):
        with pytest.raises(QtoolError) as info:
            open_data(tmp_path, spec, preprocess=preprocess)
        assert str(info.value) == (
            f"{tmp_path} holds images but no [preprocess] table is configured, and input "
            f"'images' expects float32 [batch,3,640,640] (NCHW, 640x640): add a [preprocess] "
            f"table (resize, crop, scale, mean, std, layout) to the --config file; see "
            f"\"Input data\" in the README")
    nhwc = [InputSpec("img", np.dtype(np.uint8), (1, "h", "w", 3))]
    with pytest.raises(QtoolError, match=r"expects uint8 \[1,h,w,3\] \(NHWC, height and width "
                                         r"not fixed\): add a \[preprocess\] table"):
        open_data(tmp_path / "a.png", nhwc)


def test_images_need_the_batch_on_axis_0(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(QtoolError) as info:
        open_data(tmp_path, [InputSpec("img", F32, ("n", 3, 4, 4))], preprocess={"scale": 1.0},
                  inputs={"img": {"batch_axis": "none"}})
    assert str(info.value) == ("image data makes batches on axis 0, but input 'img' [n,3,4,4] "
                               "has batch axis: img none")
