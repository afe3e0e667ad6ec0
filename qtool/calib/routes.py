"""Which tensors calibration observes, and how: the model-analysis half of calibration.

The placement plan (qtool.placement) says which activation tensors the default Q/DQ placement
quantizes; only those are observed, each by the cheapest route that gives what its threshold
needs (a histogram, a max pooled inside onnxruntime, channel means).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from qtool.graph.facts import ModelFacts, as_facts
from qtool.graph.observe import tensors_to_observe
from qtool.placement import make_plan
from qtool.placement.plan import Plan


def calibration_plan(facts: ModelFacts, candidates: list[str] | None = None) -> Plan | None:
    """The default placement with every candidate (default: tensors_to_observe) calibrated: every
    other quantize option only removes Q/DQ. None where it cannot be planned here: weights still
    on disk, which placement must see, or a graph it fails on (such as an opset quantize would
    upgrade first)."""
    if facts.unloaded_weights:
        return None
    if candidates is None:
        candidates = tensors_to_observe(facts)
    try:
        return make_plan(facts, dict.fromkeys(candidates, 1.0))
    except Exception:  # planning is an optimisation here; observing more is always correct
        return None


def tensors_to_calibrate(model: ModelFacts | onnx.ModelProto) -> list[str]:
    """The activation tensors the default Q/DQ placement quantizes, in graph order (see
    observed_tensors). Histogramming the other candidates (Adds that will not fuse, inputs of
    unquantized Concats) cost 2.7-3.7x the needed work on PP-OCR models."""
    facts = as_facts(model)
    return observed_tensors(facts, calibration_plan(facts))


def observed_tensors(facts: ModelFacts, plan: Plan | None) -> list[str]:
    """The candidates (tensors_to_observe) that `plan` quantizes, in graph order; every
    candidate when there is no plan or it quantizes none."""
    candidates = tensors_to_observe(facts)
    if plan is None:
        return candidates
    needed = [name for name in candidates if name in plan.activations]
    return needed or candidates


@dataclass
class ObservationRoutes:
    """How calibration observes each tensor (see collect_histograms and qtool.calib.pooled)."""

    histograms: list[str]          # taken out whole: |x| histogram (and numpy channel means)
    max_only: list[str]            # bounded and never negative: max|x| pooled in onnxruntime
    pooled_means: list[str]        # convolution inputs: channel means pooled in onnxruntime
    mean_axes: dict[str, int]      # the other tensors whose channel means are kept


def observation_routes(model: ModelFacts | onnx.ModelProto, tensors: list[str],
                       bounded: dict[str, tuple[float, float]],
                       axes: dict[str, int]) -> ObservationRoutes:
    """Tensors whose amax will be their max (bounded, see build_calibration) and whose values
    are never negative need no histogram: global max pooling inside onnxruntime gives max|x|
    without taking the tensor out. Likewise conv inputs' channel means come from global average
    pooling. Both need a float32 tensor of rank >= 3 (known from shape inference: onnxruntime's
    CPU pooling takes no other float type); otherwise the tensor is histogrammed as usual."""
    facts = as_facts(model)
    fed = facts.graph_inputs
    wanted = set(tensors)
    rank3 = {name for name, info in facts.infos.items()
             if info.elem_type == onnx.TensorProto.FLOAT
             and info.shape is not None and len(info.shape) >= 3}
    max_only = [name for name in tensors if name in bounded and bounded[name][0] >= 0
                and name in rank3 and name not in fed and axes.get(name, 1) == 1]
    pooled = [name for name, axis in axes.items() if axis == 1 and name in rank3 and name in wanted]
    histograms = [name for name in tensors if name not in max_only]
    mean_axes = {name: axis for name, axis in axes.items()
                 if name in histograms and name not in pooled}
    return ObservationRoutes(histograms, max_only, pooled, mean_axes)
