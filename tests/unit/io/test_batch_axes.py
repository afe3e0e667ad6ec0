"""Each input's batch axis: from the model's dimension names, or the config's [inputs] table."""

import numpy as np
import pytest

from qtool.errors import QtoolError
from qtool.io.batch_axes import BatchLayout, is_batch_name
from qtool.io.model import InputSpec, input_specs
from tests.tiny_models import state_step

F32 = np.dtype(np.float32)
I64 = np.dtype(np.int64)


def spec(name, shape, dtype=F32):
    return InputSpec(name, dtype, tuple(shape))


def axes(specs, inputs=None):
    return BatchLayout.of(specs, inputs).axes


@pytest.mark.parametrize("name", ["batch", "Batch", "batch_size", "batchSize", "N", "n", "bs",
                                  "input_batch"])
def test_batch_names(name):
    assert is_batch_name(name)


@pytest.mark.parametrize("name", ["sequence", "height", "num", "", None, 3])
def test_other_names_are_not_batch_names(name):
    assert not is_batch_name(name)


def test_state_input_keeps_its_batch_on_axis_1_and_a_scalar_is_not_batched():
    layout = BatchLayout.of(input_specs(state_step()))
    assert layout.axes == {"x": 0, "state": 1, "sr": None}
    assert layout.batched and layout.dynamic and layout.size is None
    assert layout.describe() == "batch axis: x 0, state 1, sr none"


def test_a_symbol_shared_by_inputs_marks_the_batch_when_none_is_named_like_one():
    layout = BatchLayout.of(input_specs(state_step(batch="s")))
    assert layout.axes == {"x": 0, "state": 1, "sr": None}


def test_the_shared_symbol_at_the_lowest_axis_wins():
    specs = [spec("ids", ["a", "t"]), spec("mask", ["a", "t"]), spec("cache", [4, "a", "t", 8])]
    assert axes(specs) == {"ids": 0, "mask": 0, "cache": 1}


def test_inputs_without_the_batch_name_are_not_batched():
    specs = [spec("x", ["batch", 3, 8, 8]), spec("scale", [1]), spec("boxes", ["num_boxes", 4])]
    layout = BatchLayout.of(specs)
    assert layout.axes == {"x": 0, "scale": None, "boxes": None}
    assert layout.dynamic


def test_without_names_axis_0_is_the_batch_of_every_non_scalar_input():
    specs = [spec("a", [None, 3]), spec("b", ["unk__1", 5]), spec("t", [], I64)]
    assert axes(specs) == {"a": 0, "b": 0, "t": None}


def test_a_fixed_batch_size_comes_from_static_batch_dimensions():
    layout = BatchLayout.of([spec("x", [4, 3]), spec("y", [None, 2])])
    assert layout.axes == {"x": 0, "y": 0} and layout.size == 4 and not layout.dynamic


def test_disagreeing_static_first_dimensions_mean_no_batch_axis():
    layout = BatchLayout.of([spec("a", [1, 3]), spec("b", [4])])
    assert layout.axes == {"a": None, "b": None} and not layout.batched


def test_config_sets_axes_and_none():
    specs = input_specs(state_step(batch=None))  # no names: axis 0 everywhere
    assert axes(specs) == {"x": 0, "state": 0, "sr": None}
    assert axes(specs, {"state": {"batch_axis": 1}}) == {"x": 0, "state": 1, "sr": None}
    assert axes(specs, {"state": {"batch_axis": -2}}) == {"x": 0, "state": 1, "sr": None}
    assert axes(specs, {"x": {"batch_axis": "none"}, "state": {"batch_axis": "None"}}) == {
        "x": None, "state": None, "sr": None}


def test_config_can_fix_disagreeing_static_axes():
    specs = [spec("x", [1, 16]), spec("state", [2, 1, 8])]
    assert not BatchLayout.of(specs).batched
    layout = BatchLayout.of(specs, {"state": {"batch_axis": 1}})
    assert layout.axes == {"x": 0, "state": 1} and layout.size == 1


@pytest.mark.parametrize("table, message", [
    ({"y": {"batch_axis": 0}}, "[inputs.y]: the model has no input 'y' (inputs: x, state, sr)"),
    ({"x": 1}, "[inputs.x] must be a table, such as [inputs.x] batch_axis = 0"),
    ({"x": {"axis": 1}}, "unknown key 'axis' in [inputs.x] (known: batch_axis)"),
    ({"x": {"batch_axis": 2}}, "[inputs.x] batch_axis = 2 is outside input 'x' [batch,16] (rank 2)"),
    ({"sr": {"batch_axis": 0}}, "[inputs.sr] batch_axis = 0 is outside input 'sr' [] (rank 0)"),
    ({"x": {"batch_axis": "first"}}, ("[inputs.x] batch_axis must be an axis number or \"none\", "
                                     "got 'first'")),
    ({"x": {"batch_axis": True}}, ("[inputs.x] batch_axis must be an axis number or \"none\", "
                                  "got True")),
])
def test_bad_inputs_tables(table, message):
    with pytest.raises(QtoolError) as info:
        BatchLayout.of(input_specs(state_step()), table)
    assert str(info.value) == message


def test_configured_axes_with_different_fixed_sizes_are_refused():
    specs = [spec("x", [1, 16]), spec("state", [2, 1, 8])]
    with pytest.raises(QtoolError) as info:
        BatchLayout.of(specs, {"state": {"batch_axis": 0}})
    assert str(info.value) == ("the inputs' batch axes have different fixed sizes ('x' axis 0 of "
                               "[1,16], 'state' axis 0 of [2,1,8]); set [inputs.NAME] batch_axis "
                               "in the config")


def test_take_join_and_samples_follow_each_axis():
    layout = BatchLayout.of(input_specs(state_step()))
    rng = np.random.default_rng(0)
    feed = {"x": rng.normal(size=(5, 16)).astype(np.float32),
            "state": rng.normal(size=(2, 5, 8)).astype(np.float32), "sr": np.array(16000)}
    assert layout.length(feed, "f") == 5
    part = layout.take(feed, 1, 3)
    np.testing.assert_array_equal(part["x"], feed["x"][1:3])
    np.testing.assert_array_equal(part["state"], feed["state"][:, 1:3])
    assert part["state"].flags.c_contiguous and part["sr"] is feed["sr"]
    singles = layout.samples(feed, 5)
    assert [s["state"].shape for s in singles] == [(2, 1, 8)] * 5
    joined = layout.join(singles)
    np.testing.assert_array_equal(joined["state"], feed["state"])
    np.testing.assert_array_equal(joined["x"], feed["x"])
    assert joined["sr"] == 16000
    sample = layout.add_sample_axis({"x": feed["x"][0], "state": feed["state"][:, 0],
                                     "sr": feed["sr"]})
    assert sample["x"].shape == (1, 16) and sample["state"].shape == (2, 1, 8)
    assert layout.differing_unbatched(feed, {**feed, "sr": np.array(8000)}) == "sr"
    assert layout.differing_unbatched(feed, {**feed, "x": feed["x"] + 1}) is None


def test_length_names_inputs_that_disagree():
    layout = BatchLayout.of(input_specs(state_step()))
    feed = {"x": np.zeros((3, 16), np.float32), "state": np.zeros((2, 1, 8), np.float32),
            "sr": np.array(16000)}
    with pytest.raises(QtoolError) as info:
        layout.length(feed, "item 0")
    assert str(info.value) == ("item 0: the inputs hold different numbers of samples (x 3 on "
                               "axis 0, state 1 on axis 1); if an input is not batched or keeps "
                               "its samples on another axis, set [inputs.NAME] batch_axis in the "
                               "config")


def test_an_inputs_value_that_is_not_a_table_is_refused():
    with pytest.raises(QtoolError) as info:
        BatchLayout.of(input_specs(state_step()), 3)
    assert str(info.value) == ("[inputs] must be a table of input names, such as "
                               "[inputs.NAME] batch_axis = 0")


def test_compare_keeps_a_dimension_name_when_one_model_has_none():
    from qtool.analysis.compare import merge_specs

    onnx_side = input_specs(state_step())
    engine_side = [spec("x", [None, 16]), spec("state", [2, None, 8]), spec("sr", [], I64)]
    for merged in (merge_specs(onnx_side, engine_side), merge_specs(engine_side, onnx_side)):
        assert [s.shape for s in merged] == [("batch", 16), (2, "batch", 8), ()]
        assert BatchLayout.of(merged).axes == {"x": 0, "state": 1, "sr": None}
    fixed = [spec("x", [4, 16]), spec("state", [2, None, 8]), spec("sr", [], I64)]
    assert [s.shape for s in merge_specs(onnx_side, fixed)] == [(4, 16), (2, "batch", 8), ()]
