"""`--method auto`: the thresholds that keep the model's outputs closest to FP32, chosen from the
histograms already collected, scored on calibration samples held aside for it.

No single threshold method is right for every network: entropy clips the positive range of SiLU
detectors, max wastes range on heavy tails, and the best method differs from model to model. So
the choice is measured, in two phases, on a ThresholdProbe (one onnxruntime session of the
quantized model whose activation scales are inputs):

1. per model: every candidate method's full threshold set is scored on the whole slice; the best
   wins (ties go to the earlier, more robust method of CANDIDATE_METHODS);
2. per tensor, within a budget of probe sample-runs: tensors whose candidates differ most in
   their own estimated quantization error come first; each other candidate threshold is scored
   on half A of the slice, and the best one is kept only if it also beats the current set on
   half B, samples it was not chosen on (a per-tensor search on few samples overfits them).

The score uses the task when one is known: for classification, top-1 agreement with FP32 first,
then the logit SQNR. Otherwise every floating-point output counts the same: the mean of the
per-output SQNRs in dB, never one SQNR pooled over outputs of different scales.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from qtool.io.batch_axes import BatchLayout
from qtool.thresholds.cost import estimated_sqnr_db

# Candidate methods, most robust first: on ties the earlier one wins. mse was best or within a
# few samples of the best on most real models; entropy and max fail badly on some.
CANDIDATE_METHODS = ("mse", "percentile", "entropy", "max")
SQNR_CAP_DB = 80.0        # an output quantized almost exactly adds no more to the mean
SQNR_EPSILON_DB = 0.01    # smaller gains are noise, not a reason to change a threshold
SLICE_MAX_SAMPLES = 32
SLICE_MIN_SAMPLES = 8
PROBE_BATCH = 8           # samples per probe run
SAME_AMAX = 0.01          # candidates within 1% of the current threshold are not tried again


@dataclass(frozen=True)
class Score:
    """Higher is better; `agreement` (classification only) decides before the SQNR."""

    agreement: float
    sqnr_db: float

    def beats(self, other: Score) -> bool:
        if self.agreement != other.agreement and not math.isnan(self.agreement):
            return self.agreement > other.agreement
        return self.sqnr_db > other.sqnr_db + SQNR_EPSILON_DB

    def rank(self) -> tuple[float, float]:
        """A sort key with the same order as `beats` (without its epsilon)."""
        return (0.0 if math.isnan(self.agreement) else self.agreement, self.sqnr_db)

    def to_dict(self) -> dict:
        entry = {"sqnr_db": round(self.sqnr_db, 3)}
        if not math.isnan(self.agreement):
            entry["agreement"] = round(self.agreement, 4)
        return entry


def score_outputs(references: list[list[np.ndarray]], outputs: list[list[np.ndarray]],
                  classification: bool = False) -> Score:
    """Score one candidate's outputs against FP32 over the same batches (lists per batch, of
    arrays per output). Outputs that are not floating point, or carry no signal, are skipped."""
    sqnrs = []
    for index in range(len(references[0])):
        signal = noise = 0.0
        for reference, output in zip(references, outputs):
            ref = reference[index]
            if not np.issubdtype(ref.dtype, np.floating):
                break
            ref = ref.astype(np.float64)
            diff = np.nan_to_num(output[index].astype(np.float64) - ref, nan=1e30, posinf=1e30,
                                 neginf=1e30)
            signal += float(np.sum(ref * ref))
            noise += float(np.sum(diff * diff))
        else:
            if signal > 0:
                db = SQNR_CAP_DB if noise == 0 else 10.0 * math.log10(signal / noise)
                sqnrs.append(min(db, SQNR_CAP_DB))
    sqnr = float(np.mean(sqnrs)) if sqnrs else 0.0
    if not classification:
        return Score(math.nan, sqnr)
    same = total = 0
    for reference, output in zip(references, outputs):
        ref, out = reference[0], output[0]
        ref = ref.reshape(ref.shape[0], -1) if ref.ndim > 1 else ref.reshape(1, -1)
        out = out.reshape(ref.shape)
        same += int(np.sum(ref.argmax(1) == out.argmax(1)))
        total += ref.shape[0]
    return Score(same / max(total, 1), sqnr)


class SliceTap:
    """Keeps an evenly spread slice of the calibration samples while they stream past.

    Batches pass through unchanged; their samples are kept one by one, cut along each input's
    batch axis (`layout`, a qtool.io.batch_axes.BatchLayout). When more than `capacity` samples
    are kept, every second one is dropped and only every second later one is taken, so the slice
    stays spread over the whole data set without knowing its size in advance (memory: capacity
    samples)."""

    def __init__(self, capacity: int, layout: BatchLayout):
        self.capacity = capacity
        self.layout = layout
        self.units: list[dict[str, np.ndarray]] = []
        self._stride = 1
        self._seen = 0
        self._largest = 1  # samples in the largest batch seen: a fixed batch size is kept
        self.sizes: list[int] = []  # samples in each of the batches() last returned

    def wrap(self, batches: Iterable[dict[str, np.ndarray]]):
        for feeds in batches:
            count = self.layout.length(feeds, "calibration batch")
            units = self.layout.samples(feeds, count) if count > 1 else [feeds]
            self._largest = max(self._largest, len(units))
            for unit in units:
                if self._seen % self._stride == 0:
                    self.units.append({name: np.array(value) for name, value in unit.items()})
                    if len(self.units) > self.capacity:
                        self.units = self.units[::2]
                        self._stride *= 2
                self._seen += 1
            yield feeds

    def batches(self) -> list[dict[str, np.ndarray]]:
        """The kept samples, joined again in probe batches of up to PROBE_BATCH samples (never
        more than the data's own batches held: a model may fix its batch size). Samples that
        differ beyond their batch axis, or in an input that is not batched, are never joined."""
        size = min(PROBE_BATCH, self._largest)
        groups: list[list[dict]] = []
        for unit in self.units:
            if groups and len(groups[-1]) < size and self._joinable(groups[-1][0], unit):
                groups[-1].append(unit)
            else:
                groups.append([unit])
        self.sizes = [len(group) for group in groups]
        return [self.layout.join(group) for group in groups]

    def _joinable(self, first: dict[str, np.ndarray], unit: dict[str, np.ndarray]) -> bool:
        layout = self.layout
        return (layout.batched
                and all(layout.sample_shape(name, value.shape)
                        == layout.sample_shape(name, unit[name].shape)
                        for name, value in first.items())
                and layout.differing_unbatched(first, unit) is None)


@dataclass
class AutoChoice:
    """What the search decided, and the evidence."""

    amax: dict[str, float]
    methods: dict[str, str]                     # tensor -> winning method
    model_method: str                           # the phase-1 winner
    model_scores: dict[str, Score]              # phase 1: method -> score on the whole slice
    tensor_scores: dict[str, dict[str, Score]] = field(default_factory=dict)  # phase 2, half A
    refined: list[str] = field(default_factory=list)  # tensors whose threshold phase 2 changed
    slice_samples: int = 0
    sample_runs: int = 0
    budget: int = 0

    def record(self) -> dict:
        return {
            "model_method": self.model_method,
            "model_scores": {name: score.to_dict() for name, score in self.model_scores.items()},
            "refined": list(self.refined),
            "slice_samples": self.slice_samples,
            "sample_runs": self.sample_runs,
            "budget": self.budget,
        }


Runner = Callable[[dict[str, np.ndarray], dict[str, float]], list[np.ndarray]]


def choose_thresholds(run: Runner, batches: list[dict[str, np.ndarray]],
                      references: list[list[np.ndarray]], candidates: dict[str, dict[str, float]],
                      fixed: dict[str, float], estimates: dict[str, dict[str, float]],
                      budget: int,
                      classification: bool = False, sizes: list[int] | None = None) -> AutoChoice:
    """The search of the module doc.

    `run(feeds, amax)`: the quantized model's outputs for one batch; `references`: FP32 outputs
    of `batches`; `candidates`: method -> amax of every searched tensor; `fixed`: amax of the
    tensors not searched (bounded activations); `estimates`: tensor -> method -> estimated SQNR
    of its candidate (estimated_sqnrs), to rank tensors for phase 2; `budget`: probe sample-runs allowed (phase 1 always runs whole); `sizes`: samples in each batch (default: axis 0 of its first input)."""
    sizes = sizes or [_axis0_samples(feeds) for feeds in batches]
    spent = 0

    def outputs_of(amax: dict[str, float], which: list[int]) -> list[list[np.ndarray]]:
        nonlocal spent
        spent += sum(sizes[i] for i in which)
        return [run(batches[i], amax) for i in which]

    def score(outputs: list[list[np.ndarray]], which: list[int]) -> Score:
        return score_outputs([references[i] for i in which], outputs, classification)

    def evaluate(amax: dict[str, float], which: list[int]) -> Score:
        return score(outputs_of(amax, which), which)

    every = list(range(len(batches)))
    sets = {method: {**fixed, **values} for method, values in candidates.items()}
    model_scores: dict[str, Score] = {}
    best, best_outputs = None, None  # only the leader's outputs are kept (memory)
    for method in sorted(sets, key=_preference):
        outputs = outputs_of(sets[method], every)
        model_scores[method] = score(outputs, every)
        if best is None or model_scores[method].beats(model_scores[best]):
            best, best_outputs = method, outputs
    current = dict(sets[best])
    methods = dict.fromkeys(candidates[best], best)
    choice = AutoChoice(current, methods, best, model_scores, slice_samples=sum(sizes),
                        budget=budget)
    half_a, half_b = every[0::2], every[1::2]
    if half_b:
        # the winner's outputs on each half are known from phase 1
        start = (score(best_outputs[0::2], half_a), score(best_outputs[1::2], half_b))
        del best_outputs
        _refine(choice, evaluate, start, candidates, estimates, half_a, half_b, sizes,
                lambda: budget - spent)
    choice.sample_runs = spent
    return choice


def _refine(choice: AutoChoice, evaluate, start: tuple[Score, Score], candidates, estimates,
            half_a, half_b, sizes, remaining: Callable[[], int]) -> None:
    """Phase 2 (see the module doc), in place on `choice`; `start`: the scores of the phase-1
    winner on each half."""
    cost_a = sum(sizes[i] for i in half_a)
    cost_b = sum(sizes[i] for i in half_b)
    current = choice.amax
    score_a, score_b = start
    for tensor in _ranked(estimates):
        options = _alternatives(tensor, candidates, current[tensor])
        if not options or remaining() < cost_a * len(options) + cost_b:
            continue
        trials = {}
        for method, value in options.items():
            trials[method] = evaluate({**current, tensor: value}, half_a)
        choice.tensor_scores[tensor] = {choice.methods[tensor]: score_a, **trials}
        method = max(trials, key=lambda name: trials[name].rank())
        if not trials[method].beats(score_a):
            continue
        trial = {**current, tensor: options[method]}
        held_out = evaluate(trial, half_b)
        if held_out.beats(score_b):
            current[tensor] = options[method]
            choice.methods[tensor] = method
            choice.refined.append(tensor)
            score_a, score_b = trials[method], held_out


def _preference(method: str) -> int:
    """Position in CANDIDATE_METHODS (others after): ties keep the earlier method."""
    return CANDIDATE_METHODS.index(method) if method in CANDIDATE_METHODS else len(CANDIDATE_METHODS)


def estimated_sqnrs(histograms: dict, candidates: dict[str, dict[str, float]]
                    ) -> dict[str, dict[str, float]]:
    """tensor -> method -> estimated SQNR (thresholds.cost) of each candidate threshold, for the
    tensors that have a histogram."""
    return {tensor: {method: estimated_sqnr_db(hist.hist, hist.edges, amax[tensor])
                     for method, amax in candidates.items()}
            for tensor, hist in histograms.items() if tensor in next(iter(candidates.values()))}


def _ranked(estimates: dict[str, dict[str, float]]) -> list[str]:
    """Searched tensors, those whose candidates differ most in estimated SQNR first."""
    spread = {}
    for tensor, by_method in estimates.items():
        values = [value for value in by_method.values() if math.isfinite(value)]
        if len(values) > 1:
            spread[tensor] = max(values) - min(values)
    return sorted(spread, key=lambda name: (-spread[name], name))


def _alternatives(tensor: str, candidates: dict[str, dict[str, float]],
                  current: float) -> dict[str, float]:
    """The other candidate thresholds of one tensor, one per distinct value."""
    found: dict[str, float] = {}
    for method, amax in candidates.items():
        value = amax[tensor]
        taken = [current, *found.values()]
        if all(abs(value - other) > SAME_AMAX * max(value, other) for other in taken):
            found[method] = value
    return found


def _axis0_samples(feeds: dict[str, np.ndarray]) -> int:
    first = next(iter(feeds.values()))
    return int(first.shape[0]) if first.ndim else 1
