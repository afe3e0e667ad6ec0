"""The TensorRT op table: import-free, the only place op sets are written down, consistent with
itself, and its weight axes the ones graph.weights uses for per-channel scales."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from onnx import helper

import qtool
from qtool.graph import op_types
from qtool.graph.observe import OBSERVED_OPS
from qtool.graph.op_types import (
    AVERAGE_POOL_OPS,
    CAST_OPS,
    CONSTANT_WEIGHT_OPS,
    INT8_COMPUTE_OPS,
    INT8_CONSUMER_OPS,
    MAX_POOL_OPS,
    PASS_THROUGH_OPS,
    PLACEMENT_OPS,
    QUANTIZABLE_OPS,
    RESIDUAL_FUSING_OPS,
    SCALE_SHARING_OPS,
    WEIGHT_INPUT,
    WEIGHTED_OPS,
    weight_output_axis,
)
from qtool.graph.weights import weight_axis
from qtool.quantize.options import DEFAULT_OP_TYPES

PACKAGE = Path(qtool.__file__).parent
# Where TensorRT op facts are read; other packages name ops for other reasons (runtimes, tests).
READERS = ("graph", "placement", "quantize", "report")

TABLE = {name: frozenset(value) for name, value in vars(op_types).items()
         if name.isupper() and isinstance(value, (tuple, frozenset)) and len(value) > 1}


def test_the_table_imports_nothing():
    tree = ast.parse(Path(op_types.__file__).read_text())
    assert not [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]


def _string_literals(path: Path):
    """(line, strings) of every tuple, list or set literal made only of two or more strings."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(node.elts) > 1 and all(
                isinstance(elt, ast.Constant) and isinstance(elt.value, str) for elt in node.elts):
            yield node.lineno, frozenset(elt.value for elt in node.elts)


def test_the_table_is_the_only_place_op_sets_are_written():
    copies = []
    for package in READERS:
        for path in sorted((PACKAGE / package).rglob("*.py")):
            if path.name == "op_types.py":
                continue
            for line, strings in _string_literals(path):
                same = [name for name, ops in TABLE.items() if ops == strings]
                if same or set(WEIGHTED_OPS) <= strings:
                    copies.append(f"{path.relative_to(PACKAGE)}:{line} {sorted(strings)} {same}")
    assert copies == []


def test_the_sets_agree_with_each_other():
    assert not set(WEIGHTED_OPS) & set(PLACEMENT_OPS)
    assert QUANTIZABLE_OPS == WEIGHTED_OPS + PLACEMENT_OPS == DEFAULT_OP_TYPES == OBSERVED_OPS
    assert CONSTANT_WEIGHT_OPS <= set(WEIGHTED_OPS) and RESIDUAL_FUSING_OPS <= set(WEIGHTED_OPS)
    # every op placement quantizes runs in INT8 (residual Adds inside the conv they fuse into)
    assert set(QUANTIZABLE_OPS) <= INT8_CONSUMER_OPS
    assert set(WEIGHTED_OPS + AVERAGE_POOL_OPS + SCALE_SHARING_OPS) <= INT8_COMPUTE_OPS
    # MaxPool needs no Q/DQ of its own; AveragePool takes it
    assert MAX_POOL_OPS <= PASS_THROUGH_OPS and not MAX_POOL_OPS & set(QUANTIZABLE_OPS)
    assert not set(AVERAGE_POOL_OPS) & PASS_THROUGH_OPS
    assert CAST_OPS <= PASS_THROUGH_OPS
    assert not PASS_THROUGH_OPS & INT8_CONSUMER_OPS


@pytest.mark.parametrize("op, attrs, shape", [
    ("Conv", {}, (8, 4, 3, 3)),
    ("Conv", {"group": 4}, (8, 1, 3, 3)),
    ("ConvTranspose", {}, (4, 8, 3, 3)),
    ("Gemm", {"transB": 1}, (8, 4)),
    ("Gemm", {}, (4, 8)),
    ("MatMul", {}, (4, 8)),
])
def test_weight_axes_agree_with_graph_weights(op, attrs, shape):
    node = helper.make_node(op, ["x", "w"], ["y"], **attrs)
    expected = weight_axis(node, WEIGHT_INPUT, shape).axis
    assert expected is not None
    assert weight_output_axis(op, len(shape), bool(attrs.get("transB", 0))) == expected


def test_weight_axes_of_every_weighted_op_are_known():
    assert all(weight_output_axis(op, 2) is not None for op in WEIGHTED_OPS)
    assert weight_output_axis("Relu", 4) is None
    assert weight_output_axis("MatMul", None) is None and weight_output_axis("MatMul", 1) is None
    assert weight_output_axis("MatMul", 3) == 2  # the last axis; graph.weights keeps it per-tensor
