import functools

import numpy as np
import pytest

from qtool.analysis.gates import (
    Gates,
    evaluate_gates,
    failure_message,
    parse_flips_bound,
    parse_metric_bound,
)
from qtool.analysis.metrics import ClassificationStats
from qtool.analysis.sequences import (
    SequenceStats,
    ctc_greedy,
    edit_distance,
    looks_like_sequence,
)
from qtool.errors import QtoolError, UsageError
from tests.helpers.sequences import CANDIDATE, REFERENCE


def test_hand_made_sequence_metrics():
    stats = SequenceStats("y", blank=0)
    stats.update(REFERENCE, CANDIDATE)
    assert (stats.samples, stats.positions, stats.agree) == (2, 8, 6)
    assert stats.agreement == 75.0
    # sample 0 position 1: the reference led class 0 by 0.5 - 0.25; sample 1 position 1: by
    # 0.5 - 0.375
    assert sorted(stats.flip_margins) == [0.125, 0.25]
    # per-position margins .625 .25 .625 .5 | .5 .125 .625 .25: median (.5 + .5) / 2
    assert stats.median_top1_margin == 0.5
    assert (stats.same_sequences, stats.edits, stats.reference_tokens) == (1, 1, 5)
    assert stats.same_sequence == 50.0
    assert stats.token_error_rate == 20.0
    assert stats.named_numbers() == {"position_agreement_percent": 75.0,
                                     "same_sequence_percent": 50.0,
                                     "token_error_rate_percent": 20.0}
    summary = stats.to_dict()
    assert summary["disagreement_margins"] == [0.125, 0.25]
    assert summary["ctc"] == {"blank": 0, "same_sequence_percent": 50.0, "same_sequences": 1,
                              "token_error_rate_percent": 20.0, "edits": 1,
                              "reference_tokens": 5}


def test_without_a_blank_only_positions_are_compared():
    stats = SequenceStats("y")
    stats.update(REFERENCE, CANDIDATE)
    assert stats.named_numbers() == {"position_agreement_percent": 75.0}
    assert stats.same_sequence is None and stats.token_error_rate is None
    assert "ctc" not in stats.to_dict()


def test_no_reference_tokens_leave_the_error_rate_unmeasured_and_its_gate_failing():
    blank_only = np.zeros((2, 3, 4), dtype=np.float32)
    blank_only[..., 0] = 1.0  # every position the blank: empty sequences
    stats = SequenceStats("y", blank=0)
    stats.update(blank_only, blank_only)
    numbers = stats.named_numbers()
    assert numbers["same_sequence_percent"] == 100.0
    assert np.isnan(numbers["token_error_rate_percent"])
    (result,) = evaluate_gates(Gates(max_metric=(("token_error_rate_percent", 5.0),)), {}, None,
                               stats, numbers)
    assert not result.passed
    assert failure_message([result]) == ("accuracy gate failed: token_error_rate_percent n/a > 5 "
                                         "(--max-metric)")


def test_batches_accumulate_like_one_pass():
    rng = np.random.default_rng(3)
    ref = rng.random((9, 12, 5))
    cand = ref + rng.normal(scale=0.2, size=ref.shape)
    whole = SequenceStats("y", blank=4)
    whole.update(ref, cand)
    parts = SequenceStats("y", blank=4)
    for start in range(0, 9, 4):
        parts.update(ref[start:start + 4], cand[start:start + 4])
    assert whole.to_dict() == parts.to_dict()
    assert whole.disagreements > 0 and whole.edits > 0


def slow_ctc(row, blank):
    out, previous = [], None
    for index in row:
        if index != previous and index != blank:
            out.append(int(index))
        previous = index
    return out


@pytest.mark.parametrize("seed", range(5))
def test_ctc_greedy_matches_a_slow_loop(seed):
    rng = np.random.default_rng(seed)
    best = rng.integers(0, 4, size=(6, 30))  # few classes: many repeats and blanks
    for blank in (0, 3):
        decoded = ctc_greedy(best, blank)
        assert [d.tolist() for d in decoded] == [slow_ctc(row, blank) for row in best]


def slow_edit_distance(a, b):
    @functools.cache
    def distance(i, j):
        if i == 0 or j == 0:
            return i + j
        return min(distance(i - 1, j) + 1, distance(i, j - 1) + 1,
                   distance(i - 1, j - 1) + (a[i - 1] != b[j - 1]))
    return distance(len(a), len(b))


@pytest.mark.parametrize("seed", range(5))
def test_edit_distance_matches_the_recursive_definition(seed):
    rng = np.random.default_rng(seed)
    for _ in range(20):
        a = tuple(rng.integers(0, 3, size=rng.integers(0, 8)).tolist())
        b = tuple(rng.integers(0, 3, size=rng.integers(0, 8)).tolist())
        assert edit_distance(a, b) == slow_edit_distance(a, b)
    assert edit_distance("kitten", "sitting") == 3


def test_detection_rule():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 10, 6))
    probs = np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True)
    assert looks_like_sequence(probs.astype(np.float32))
    assert looks_like_sequence(np.log(probs))                 # log-softmax
    assert not looks_like_sequence(logits)                    # raw scores: name the task
    assert not looks_like_sequence(probs[:, :1])              # one position
    assert not looks_like_sequence(probs[..., None])          # rank 4
    assert not looks_like_sequence(np.abs(logits))            # a detector head, hidden states
    assert not looks_like_sequence(probs.astype(np.int64))
    binary = np.stack([probs[..., 0], 1 - probs[..., 0]], axis=2)
    assert not looks_like_sequence(binary)                    # two classes: a mask, not tokens


def test_shape_and_blank_errors():
    with pytest.raises(QtoolError, match=r"shape \[2, 12\]; a sequence needs scores of shape "
                                         r"\[batch, positions, classes\]"):
        SequenceStats("y").update(np.zeros((2, 12)), np.zeros((2, 12)))
    with pytest.raises(QtoolError, match="--ctc-blank 3 is outside output 'y''s 3 classes"):
        SequenceStats("y", blank=3).update(REFERENCE, CANDIDATE)
    with pytest.raises(QtoolError, match=r"the reference gives shape \[2, 4, 3\], the candidate"):
        SequenceStats("y").update(REFERENCE, CANDIDATE[:, :3])


def test_flips_above_margin_gate_for_sequences_and_classifiers():
    stats = SequenceStats("y", blank=0)
    stats.update(REFERENCE, CANDIDATE)
    (result,) = evaluate_gates(Gates(max_flips_above_margin=(0, 0.2)), {}, None, stats)
    assert (result.metric, result.value, result.threshold, result.passed) == (
        "flips_above_margin_0.2[y]", 1, 0, False)
    assert failure_message([result]) == ("accuracy gate failed: flips_above_margin_0.2[y] 1 > 0 "
                                         "(--max-flips-above-margin)")
    assert result.describe() == ("FAILED: flips_above_margin_0.2[y] = 1 "
                                 "(--max-flips-above-margin: <= 0)")
    # a flip exactly at the margin does not count: "led by more than M"
    (result,) = evaluate_gates(Gates(max_flips_above_margin=(0, 0.25)), {}, None, stats)
    assert result.passed and result.value == 0
    (result,) = evaluate_gates(Gates(max_flips_above_margin=(1, 0.1)), {}, None, stats)
    assert result.value == 2 and not result.passed
    cls = ClassificationStats("logits")
    cls.update(np.array([[3.0, 1.0], [1.0, 1.5], [0.0, 4.0]]),
               np.array([[1.0, 3.0], [2.0, 1.0], [0.0, 4.0]]))  # flips led by 2 and by 0.5
    (result,) = evaluate_gates(Gates(max_flips_above_margin=(1, 0.5)), {}, cls)
    assert (result.metric, result.value, result.passed) == ("flips_above_margin_0.5[logits]", 1,
                                                            True)
    with pytest.raises(UsageError, match="--max-flips-above-margin needs a classification or "
                                         "sequence output"):
        evaluate_gates(Gates(max_flips_above_margin=(1, 0.5)), {}, None)


def test_metric_gates():
    numbers = {"box_f1": 0.875, "token_error_rate_percent": 20.0}
    gates = Gates(min_metric=(("box_f1", 0.9),), max_metric=(("token_error_rate_percent", 20),))
    low, high = evaluate_gates(gates, {}, None, metrics=numbers)
    assert (low.passed, high.passed) == (False, True)
    assert failure_message([low, high]) == ("accuracy gate failed: box_f1 0.875 < 0.9 "
                                            "(--min-metric)")
    assert high.describe() == "ok: token_error_rate_percent = 20 (--max-metric: <= 20)"
    (nan,) = evaluate_gates(Gates(min_metric=(("m", 0.0),)), {}, None, metrics={"m": np.nan})
    assert not nan.passed
    with pytest.raises(UsageError, match=r"--max-metric cer: no metric of that name "
                                         r"\(measured: box_f1, token_error_rate_percent\)"):
        evaluate_gates(Gates(max_metric=(("cer", 1.0),)), {}, None, metrics=numbers)
    assert gates.any and gates.metric_names == ["box_f1", "token_error_rate_percent"]
    assert gates.to_dict() == {"min_metric": {"box_f1": 0.9},
                               "max_metric": {"token_error_rate_percent": 20}}
    assert Gates(max_flips_above_margin=(3, 0.5)).to_dict() == {"max_flips_above_margin": "3:0.5"}
    assert not Gates().any


def test_gate_option_parsing():
    assert parse_metric_bound("box_f1=0.95", "--min-metric") == ("box_f1", 0.95)
    assert parse_metric_bound(" cer = 2 ", "--max-metric") == ("cer", 2.0)
    for bad in ("box_f1", "=1", "f1=abc", "f1=inf", "f1="):
        with pytest.raises(UsageError, match="--min-metric takes NAME=VALUE"):
            parse_metric_bound(bad, "--min-metric")
    assert parse_flips_bound("3:0.5") == (3, 0.5)
    for bad in ("3", "-1:0.5", "3:-1", "a:1", "1.5:1", "3:nan"):
        with pytest.raises(UsageError, match="--max-flips-above-margin takes N:M"):
            parse_flips_bound(bad)


def test_large_outputs_are_summed_in_chunks_with_the_same_results(monkeypatch):
    from qtool.analysis import metrics, sequences
    from qtool.analysis.metrics import OutputStats

    rng = np.random.default_rng(5)
    ref = rng.random((5, 9, 7)).astype(np.float32)
    cand = (ref + rng.normal(scale=0.1, size=ref.shape)).astype(np.float32)
    whole_out, whole_seq = OutputStats("y"), SequenceStats("y", blank=0)
    whole_out.update(ref, cand)
    whole_seq.update(ref, cand)
    monkeypatch.setattr(metrics, "CHUNK", 10)    # 315 elements in 32 steps
    monkeypatch.setattr(sequences, "CHUNK", 20)  # 2 positions of 7 classes per step
    chunked_out, chunked_seq = OutputStats("y"), SequenceStats("y", blank=0)
    chunked_out.update(ref, cand)
    chunked_seq.update(ref, cand)
    assert chunked_seq.to_dict() == whole_seq.to_dict()
    assert list(chunked_seq.top1_margins) == list(whole_seq.top1_margins)
    assert chunked_out.max_abs == whole_out.max_abs and chunked_out.elements == 315
    for key in ("ref_energy", "cand_energy", "dot", "noise_energy", "abs_error"):
        assert getattr(chunked_out, key) == pytest.approx(getattr(whole_out, key), rel=1e-12)
