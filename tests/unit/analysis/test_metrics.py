import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qtool.analysis.gates import Gates, evaluate_gates, failure_message
from qtool.analysis.metrics import (
    MARGINS_SHOWN,
    ClassificationStats,
    OutputStats,
    as_logits,
    describe_disagreements,
    format_number,
    json_number,
    label_ranks,
)
from qtool.errors import QtoolError, UsageError


def stats_of(*pairs, name="y"):
    stats = OutputStats(name)
    for ref, cand in pairs:
        stats.update(np.asarray(ref, np.float32), np.asarray(cand, np.float32))
    return stats


def test_hand_computed_metrics():
    # ref energy 9 + 16 = 25, error (0, 1) -> noise 1; dot 9 + 12 = 21; cand energy 18
    stats = stats_of(([[3.0, 4.0]], [[3.0, 3.0]]))
    assert stats.sqnr_db == pytest.approx(10 * math.log10(25.0), abs=1e-12)
    assert stats.cosine == pytest.approx(21 / math.sqrt(25 * 18), abs=1e-15)
    assert stats.max_abs_error == 1.0
    assert stats.mean_abs_error == 0.5
    assert stats.elements == 2


def test_batches_accumulate_like_one_pass():
    ref = np.array([[1, -2, 3], [4, 5, -6]], np.float32)
    cand = np.array([[1, -1, 3], [2, 5, -7]], np.float32)
    whole = stats_of((ref, cand))
    split = stats_of((ref[:1], cand[:1]), (ref[1:], cand[1:]))
    for attr in ("sqnr_db", "cosine", "max_abs_error", "mean_abs_error"):
        assert getattr(whole, attr) == getattr(split, attr)
    # noise = 1 + 4 + 1 = 6, signal = 1+4+9+16+25+36 = 91
    assert whole.sqnr_db == pytest.approx(10 * math.log10(91 / 6), abs=1e-12)
    assert whole.mean_abs_error == pytest.approx(4 / 6)
    assert whole.max_abs_error == 2.0


def test_identical_outputs_have_infinite_sqnr_written_as_string():
    stats = stats_of(([[1.0, 2.0]], [[1.0, 2.0]]))
    assert stats.sqnr_db == math.inf
    assert stats.cosine == 1.0
    record = stats.to_dict()
    assert record["sqnr_db"] == "inf"
    assert json.loads(json.dumps(record, allow_nan=False))["sqnr_db"] == "inf"
    assert format_number(stats.sqnr_db) == "inf"


def test_zero_reference():
    stats = stats_of(([[0.0, 0.0]], [[0.0, 1.0]]))
    assert stats.sqnr_db == -math.inf
    assert stats.cosine == 0.0
    assert json_number(stats.sqnr_db) == "-inf"
    both_zero = stats_of(([[0.0]], [[0.0]]))
    assert both_zero.cosine == 1.0 and both_zero.sqnr_db == math.inf


def test_shared_non_finite_values_agree_and_others_mismatch():
    agree = stats_of(([[np.nan, np.inf, 2.0]], [[np.nan, np.inf, 1.0]]))
    assert agree.mismatched == 0
    assert agree.elements == 1
    assert agree.sqnr_db == pytest.approx(10 * math.log10(4.0))
    differ = stats_of(([[np.nan, 1.0, 2.0]], [[1.0, np.inf, 2.0]]))
    assert differ.mismatched == 2
    assert differ.sqnr_db == -math.inf
    assert differ.max_abs_error == math.inf
    assert differ.elements == 1 and differ.cosine == 1.0


def test_shape_mismatch_is_a_user_error():
    stats = OutputStats("y")
    with pytest.raises(QtoolError, match="reference gives shape \\[1, 2\\], the candidate \\[1, 3\\]"):
        stats.update(np.zeros((1, 2)), np.zeros((1, 3)))


def slow_rank(row, label):
    order = sorted(range(len(row)), key=lambda c: (-row[c], c))
    return order.index(label)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 9), st.integers(0, 2**31 - 1))
def test_label_ranks_match_a_stable_sort(rows, classes, seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(-2, 3, size=(rows, classes)).astype(np.float32)  # many ties
    labels = rng.integers(0, classes, size=rows)
    expected = [slow_rank(scores[i].tolist(), int(labels[i])) for i in range(rows)]
    assert label_ranks(scores, labels).tolist() == expected
    # top-1 under this order is numpy's argmax
    assert [int(np.argmax(r)) for r in scores] == [
        min(range(classes), key=lambda c: (-scores[i][c], c)) for i in range(rows)]


def test_label_outside_classes():
    with pytest.raises(QtoolError, match="label 7 is outside the model's 3 classes"):
        label_ranks(np.zeros((1, 3)), np.array([7]))


def test_classification_counts():
    ref = np.array([[0.9, 0.1, 0.0, 0, 0, 0, 0],    # top1 0
                    [0.1, 0.8, 0.1, 0, 0, 0, 0],    # top1 1
                    [0.0, 0.2, 0.7, 0, 0, 0, 0.1],  # top1 2
                    [0.5, 0.5, 0.0, 0, 0, 0, 0]],   # tie 0/1 -> 0
                   np.float32)
    cand = ref.copy()
    cand[1] = [0.1, 0.1, 0.8, 0, 0, 0, 0]           # top1 2 now
    labels = np.array([0, 1, 6, 1])
    stats = ClassificationStats("logits")
    stats.update(ref[:2], cand[:2], labels[:2])
    stats.update(ref[2:], cand[2:], labels[2:])
    assert stats.samples == 4 and stats.labelled == 4
    assert stats.agreement == 75.0
    # reference: sample 0 right, 1 right, 2 wrong (rank 1), 3 wrong (tie lost to class 0)
    assert stats.accuracy("reference", 1) == 50.0
    # candidate: only sample 0 right at top-1; sample 1 has label 1 tied with class 0 -> rank 2
    assert stats.accuracy("candidate", 1) == 25.0
    assert stats.top1_drop == 25.0
    # top-5: every label within the first five positions except none -> 100%
    assert stats.accuracy("reference", 5) == 100.0
    record = stats.to_dict()
    assert record["top1_agreement_percent"] == 75.0
    assert record["candidate"] == {"top1_percent": 25.0, "top5_percent": 100.0}


def test_disagreements_keep_the_reference_margin():
    ref = np.array([[3.0, 1.0, 0.0],    # margin 2, agreed
                    [0.5, 0.45, 0.0],   # margin 0.05; candidate picks 1: a near-tie lost
                    [2.0, 0.0, 1.0],    # margin 1; candidate picks 2, 1 below the top
                    [0.0, 4.0, 0.5]],   # margin 3.5, agreed
                   np.float16)
    cand = np.array([[3, 1, 0], [0.4, 0.5, 0], [0, 0, 3], [0, 4, 0]], np.float32)
    stats = ClassificationStats("y")
    stats.update(ref[:3], cand[:3])
    stats.update(ref[3:], cand[3:])
    assert stats.disagreements == 2 and stats.agreement == 50.0
    # float16 scores, subtracted in float64: 0.5 and 0.45 as float16 are 0.5 and 0.4500...
    np.testing.assert_allclose(sorted(stats.flip_margins), [0.5 - float(np.float16(0.45)), 1.0])
    assert stats.median_top1_margin == pytest.approx((1.0 + 2.0) / 2)
    record = stats.to_dict()
    assert record["disagreements"] == 2
    assert record["disagreement_margins"] == sorted(stats.flip_margins)
    assert record["median_top1_margin"] == pytest.approx(1.5)


def test_disagreement_margins_in_the_summary():
    stats = ClassificationStats("y")
    ref = np.tile(np.array([[2.0, 0.0]]), (8, 1))
    ref[:, 1] = np.linspace(1.9, 1.2, 8)  # margins 0.1 ... 0.8
    stats.update(ref, ref[:, ::-1].copy())  # every pick flipped
    text = describe_disagreements(stats.disagreements, stats.flip_margins,
                                  stats.median_top1_margin)
    assert MARGINS_SHOWN == 5
    assert text == ("8 disagreements; there the reference's top-1 led the candidate's pick by "
                    "0.1, 0.2, 0.3, 0.4, 0.5, ... (3 more) (its median top-1 margin over all "
                    "samples: 0.45)")
    assert describe_disagreements(1, [0.25], None) == (
        "1 disagreement; there the reference's top-1 led the candidate's pick by 0.25")


def test_top5_excludes_labels_ranked_sixth():
    scores = np.arange(10, dtype=np.float32)[None, ::-1].copy()  # class 0 best ... class 9 worst
    stats = ClassificationStats("y")
    stats.update(scores, scores, np.array([5]))
    assert stats.accuracy("reference", 5) == 0.0
    stats.update(scores, scores, np.array([4]))
    assert stats.accuracy("reference", 5) == 50.0


def test_top1_drop_is_exact_from_counts():
    stats = ClassificationStats("y")
    stats.labelled = 540
    stats.reference.top1, stats.candidate.top1 = 534, 529
    assert stats.top1_drop == 100.0 * 5 / 540
    stats.labelled, stats.reference.top1, stats.candidate.top1 = 300, 297, 294
    assert stats.top1_drop == 1.0


def test_logits_shapes():
    assert as_logits(np.zeros((2, 5, 1, 1)), "y").shape == (2, 5)
    with pytest.raises(QtoolError, match="classification needs scores"):
        as_logits(np.zeros((2, 5, 2)), "y")
    with pytest.raises(QtoolError, match="classification needs scores"):
        as_logits(np.zeros(5), "y")


def test_gates_pass_and_fail_with_names_values_thresholds():
    outputs = {"y": stats_of(([[3.0, 4.0]], [[3.0, 3.0]]))}  # 13.98 dB
    cls = ClassificationStats("y")
    cls.samples, cls.agree, cls.labelled = 100, 97, 100
    cls.reference.top1, cls.candidate.top1 = 90, 89
    results = evaluate_gates(Gates(min_sqnr=13.9, max_top1_drop=1.0, min_agreement=97.0),
                             outputs, cls)
    assert [r.passed for r in results] == [True, True, True]
    assert failure_message(results) is None
    results = evaluate_gates(Gates(min_sqnr=14.0, min_cosine=0.9, max_top1_drop=0.5,
                                   min_agreement=98), outputs, cls)
    assert [(r.gate, r.passed) for r in results] == [
        ("min_sqnr", False), ("min_cosine", True), ("max_top1_drop", False),
        ("min_agreement", False)]
    message = failure_message(results)
    assert message == ("accuracy gate failed: sqnr_db[y] 13.9794 < 14 (--min-sqnr); "
                       "top1_drop_points 1 > 0.5 (--max-top1-drop); "
                       "top1_agreement_percent 97 < 98 (--min-agreement)")


def test_nan_metric_fails_its_gate():
    outputs = {"y": stats_of(([[1.0]], [[np.nan]]))}
    (result,) = evaluate_gates(Gates(min_sqnr=-1000), outputs, None)
    assert not result.passed


def test_gates_without_what_they_need():
    with pytest.raises(UsageError, match="needs labels"):
        evaluate_gates(Gates(max_top1_drop=1), {}, ClassificationStats("y"))
    with pytest.raises(UsageError, match="needs a classification output"):
        evaluate_gates(Gates(min_agreement=99), {}, None)
    with pytest.raises(UsageError, match="percentage"):
        Gates(min_agreement=150).validate()
