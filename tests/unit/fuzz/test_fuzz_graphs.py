"""Property-based fuzzing of Q/DQ insertion on random graphs.

Random DAGs of Conv, Relu, Clip, Add, Concat, AveragePool, MaxPool, GlobalAveragePool, Flatten,
Gemm and MatMul with consistent shapes (a 4-D phase, then a 2-D phase), quantized with random
options and amax. For every graph the result must pass onnx's full checker, have no error in
`qtool check`, run in onnxruntime with the FP32 model's output shapes, and leave the input
model untouched. With amax measured on the data, INT8 stays close to FP32.

Budget: fixed and derandomised in CI; QTOOL_FUZZ_LONG=1 (`make fuzz`) runs many more cases.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from qtool.graph.observe import tensors_to_observe
from qtool.quantize.api import quantize_model
from qtool.quantize.check import check_model
from qtool.quantize.options import QuantizeOptions
from tests.helpers.fuzzing import fuzz_settings


class RandomGraph:
    """Grows a graph node by node; every tensor's shape is known (batch axis "N" left out)."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.count = 0
        channels, height, width = (int(rng.integers(1, 5)), int(rng.integers(3, 9)),
                                   int(rng.integers(3, 9)))
        self.shapes["x"] = (channels, height, width)

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def const(self, array: np.ndarray, prefix: str = "c") -> str:
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def add(self, op: str, inputs: list[str], shape: tuple, **attrs) -> str:
        output = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [output], name=f"{op}_{self.count}", **attrs))
        self.shapes[output] = shape
        return output

    def pick(self, rank: int) -> str:
        names = [n for n, s in self.shapes.items() if len(s) == rank]
        # prefer recent tensors, so the graph gets deep as well as wide
        weights = np.arange(1, len(names) + 1, dtype=np.float64) ** 2
        return names[int(self.rng.choice(len(names), p=weights / weights.sum()))]

    # -- 4-D phase ------------------------------------------------------------------------------
    def spatial_step(self) -> None:
        rng = self.rng
        t = self.pick(3)
        c, h, w = self.shapes[t]
        op = rng.choice(["Conv", "Conv", "Relu", "Clip", "Add", "Concat", "AveragePool",
                         "MaxPool", "DepthwiseConv"])
        if op in ("Conv", "DepthwiseConv"):
            k = int(rng.choice([1, 3]))
            groups = c if op == "DepthwiseConv" else 1
            out = c if groups > 1 else int(rng.integers(1, 7))
            weight = rng.normal(size=(out, c // groups, k, k)) / np.sqrt(c * k * k)
            inputs = [t, self.const(weight, "w")]
            if rng.random() < 0.7:
                inputs.append(self.const(rng.normal(size=out) * 0.1, "b"))
            self.add("Conv", inputs, (out, h, w), pads=[k // 2] * 4, group=groups)
        elif op == "Relu":
            self.add("Relu", [t], (c, h, w))
        elif op == "Clip":
            self.add("Clip", [t, self.const(np.array(0.0)), self.const(np.array(6.0))], (c, h, w))
        elif op == "Add":
            same = [n for n, s in self.shapes.items() if s == (c, h, w) and n != t]
            if same and rng.random() < 0.8:
                other = same[int(rng.integers(len(same)))]
            else:
                other = self.const(rng.normal(size=(c, 1, 1)))
            self.add("Add", [t, other], (c, h, w))
        elif op == "Concat":
            same = [n for n, s in self.shapes.items() if len(s) == 3 and s[1:] == (h, w)]
            picks = [same[int(i)] for i in rng.integers(len(same), size=int(rng.integers(2, 4)))]
            self.add("Concat", picks, (sum(self.shapes[p][0] for p in picks), h, w), axis=1)
        elif op in ("AveragePool", "MaxPool"):
            if h >= 2 and w >= 2 and rng.random() < 0.5:
                self.add(op, [t], (c, h // 2, w // 2), kernel_shape=[2, 2], strides=[2, 2])
            else:
                self.add(op, [t], (c, h, w), kernel_shape=[3, 3], pads=[1, 1, 1, 1])

    # -- 2-D phase ------------------------------------------------------------------------------
    def flatten(self) -> None:
        t = self.pick(3)
        c, h, w = self.shapes[t]
        if self.rng.random() < 0.5:
            t = self.add("GlobalAveragePool", [t], (c, 1, 1))
            h = w = 1
        self.add("Flatten", [t], (c * h * w,))

    def dense_step(self) -> None:
        rng = self.rng
        t = self.pick(1)
        (features,) = self.shapes[t]
        op = rng.choice(["Gemm", "Gemm", "MatMul", "Relu", "Clip", "Add"])
        if op == "Gemm":
            out = int(rng.integers(1, 9))
            trans_b = int(rng.integers(2))
            shape = (out, features) if trans_b else (features, out)
            inputs = [t, self.const(rng.normal(size=shape) / np.sqrt(features), "g")]
            if rng.random() < 0.6:
                inputs.append(self.const(rng.normal(size=out) * 0.1, "gb"))
            self.add("Gemm", inputs, (out,), transB=trans_b)
        elif op == "MatMul":
            out = int(rng.integers(1, 9))
            weight = self.const(rng.normal(size=(features, out)) / np.sqrt(features), "m")
            self.add("MatMul", [t, weight], (out,))
        elif op == "Relu":
            self.add("Relu", [t], (features,))
        elif op == "Clip":
            self.add("Clip", [t, self.const(np.array(-1.0)), self.const(np.array(1.0))], (features,))
        else:
            same = [n for n, s in self.shapes.items() if s == (features,) and n != t]
            other = same[int(rng.integers(len(same)))] if same else self.const(rng.normal(size=features))
            self.add("Add", [t, other], (features,))

    def model(self, extra_outputs: int) -> onnx.ModelProto:
        last = self.nodes[-1].output[0]
        produced = [n.output[0] for n in self.nodes[:-1]]
        picks = {produced[int(i)] for i in self.rng.integers(len(produced), size=extra_outputs)} \
            if produced else set()
        outputs = [last, *sorted(picks - {last})]
        graph = helper.make_graph(
            self.nodes, "random",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *self.shapes["x"]])],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", *self.shapes[n]])
             for n in outputs],
            self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        return model


def random_model(seed: int) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    graph = RandomGraph(rng)
    for _ in range(int(rng.integers(1, 9))):
        graph.spatial_step()
    if rng.random() < 0.8:
        graph.flatten()
        for _ in range(int(rng.integers(0, 5))):
            graph.dense_step()
    return graph.model(int(rng.integers(0, 3)))


def run(model: onnx.ModelProto, x: np.ndarray, outputs=None) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(outputs, {"x": x})


def measured_amax(model: onnx.ModelProto, x: np.ndarray) -> dict[str, float]:
    """Max |value| of every observed tensor on x: what `calibrate --method max` would find."""
    tensors = tensors_to_observe(model)
    probe = onnx.ModelProto.FromString(model.SerializeToString())
    existing = {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_tensor_value_info(t, TensorProto.FLOAT, None)
                              for t in tensors if t not in existing)
    values = run(probe, x, tensors)
    return {t: max(float(np.abs(v).max()), 1e-6) for t, v in zip(tensors, values)}


options = st.builds(
    QuantizeOptions,
    per_tensor_weights=st.booleans(),
    weights=st.sampled_from(["fp32", "int8"]),
    exclude_op_types=st.sampled_from([(), ("Add",), ("Concat",), ("AveragePool",), ("Gemm",)]),
)


@fuzz_settings(ci=60, long=3000)
@given(seed=st.integers(0, 2**63 - 1), opts=options, batch=st.integers(1, 4),
       amax_mode=st.sampled_from(["measured", "random"]))
def test_fuzz_random_graphs_quantize_to_valid_runnable_models(seed, opts, batch, amax_mode):
    model = random_model(seed)
    onnx.checker.check_model(model, full_check=True)  # the generator itself is sound
    before = model.SerializeToString()
    rng = np.random.default_rng(seed ^ 0x5EED)
    x = rng.normal(size=(batch, *[d.dim_value for d in
                                  model.graph.input[0].type.tensor_type.shape.dim[1:]])).astype(np.float32)
    if amax_mode == "measured":
        amax = measured_amax(model, x)
    else:
        amax = {t: float(10.0 ** rng.uniform(-6, 4)) for t in tensors_to_observe(model)}

    quantized, summary = quantize_model(model, amax, opts)

    assert model.SerializeToString() == before
    onnx.checker.check_model(quantized, full_check=True)
    report = check_model(quantized)
    errors = [f.format() for f in report.findings if f.severity == "error"]
    assert errors == []
    fp32 = run(model, x)
    int8 = run(quantized, x)
    assert [o.shape for o in int8] == [o.shape for o in fp32]
    assert all(np.all(np.isfinite(o)) for o in int8)
    ops = [n.op_type for n in quantized.graph.node]
    if summary.total_quantized:
        assert "QuantizeLinear" in ops or "DequantizeLinear" in ops
    if amax_mode == "measured" and not opts.exclude_op_types and summary.total_quantized:
        # INT8 with amax taken from this very input: a coarse closeness bound (the point is
        # that the placement is sane, not a precision target)
        for a, b in zip(fp32, int8):
            scale = float(np.abs(a).max()) + 1e-3
            assert float(np.abs(a - b).max()) <= 0.5 * scale + 0.05, (seed, opts)
