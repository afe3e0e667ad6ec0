"""Placement takes only the quantize options that decide where Q/DQ goes."""

from __future__ import annotations

from qtool.placement import PlacementOptions
from qtool.quantize.api import placement_options
from qtool.quantize.options import DEFAULT_OP_TYPES, QuantizeOptions


def test_default_quantize_options_place_like_the_default_placement():
    assert PlacementOptions().op_types == DEFAULT_OP_TYPES
    assert placement_options(QuantizeOptions()).active_op_types() == \
        PlacementOptions().active_op_types()


def test_placement_options_carry_the_choices():
    options = QuantizeOptions(op_types=("Conv", "Add"), exclude=("a.*",), exclude_op_types=("Add",),
                              per_tensor_weights=True, conv_transpose_per_tensor=True,
                              weights="int8", high_precision="fp16")
    assert placement_options(options) == PlacementOptions(
        op_types=("Conv", "Add"), exclude=("a.*",), exclude_op_types=("Add",),
        per_tensor_weights=True, conv_transpose_per_tensor=True)
    assert placement_options(options).active_op_types() == {"Conv"}
