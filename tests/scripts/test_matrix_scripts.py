"""The accuracy-matrix scripts' pure helpers: task metrics, box matching, feature extraction,
tokenizer, broken-output detection and the row/table helpers, against small exact cases."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import accuracy_matrix as am
import matrix_models as mm


def test_edit_distance():
    assert mm.edit_distance((), ()) == 0
    assert mm.edit_distance((1, 2, 3), (1, 2, 3)) == 0
    assert mm.edit_distance((1, 2, 3), (1, 3)) == 1
    assert mm.edit_distance((1, 2), (3, 4, 5)) == 3


def test_iou_and_matching():
    a = (0, 0, 10, 10, 0)
    assert mm.iou(a, a) == 1.0
    assert mm.iou(a, (10, 10, 20, 20, 0)) == 0.0
    assert mm.iou(a, (5, 0, 15, 10, 0)) == pytest.approx(50 / 150)
    # same place, other class: no match
    assert mm.match_counts([a], [(0, 0, 10, 10, 1)]) == (0, 1, 1)
    assert mm.match_counts([a, (20, 20, 30, 30, 0)], [a]) == (1, 0, 1)
    assert mm.f1_of([([a], [a])]) == 1.0
    assert mm.f1_of([([], [])]) is None
    assert mm.f1_of([([a], [])]) == 0.0


def test_yolo_boxes_threshold_and_nms():
    out = np.zeros((1, 6, 3), dtype=np.float32)  # 4 box values + 2 classes, 3 anchors
    out[0, :4, 0] = [50, 50, 20, 20]
    out[0, 4, 0] = 0.9
    out[0, :4, 1] = [51, 50, 20, 20]  # overlaps the first: suppressed
    out[0, 4, 1] = 0.8
    out[0, :4, 2] = [10, 10, 4, 4]
    out[0, 5, 2] = 0.1  # under the score threshold
    boxes = mm.yolo_boxes(out)
    assert boxes == [(40.0, 40.0, 60.0, 60.0, 0)]


def test_components_boxes():
    prob = np.zeros((20, 20), dtype=np.float32)
    prob[2:6, 2:12] = 0.9
    prob[10:11, 10:11] = 0.9  # too small
    prob[14:18, 14:18] = 0.35  # above 0.3 but mean below 0.5
    assert mm.components_boxes(prob) == [(2.0, 2.0, 12.0, 6.0, 0)]


def test_magika_features(tmp_path):
    small = tmp_path / "small.txt"
    small.write_bytes(b"  hello  \n")
    features = mm.magika_features(small)
    assert features.shape == (1, 2048) and features.dtype == np.int32
    assert list(features[0, :5]) == list(b"hello") and features[0, 5] == 256
    assert list(features[0, -5:]) == list(b"hello") and features[0, -6] == 256
    big = tmp_path / "big.bin"
    big.write_bytes(b" " + bytes(range(256)) * 40 + b"\n")
    features = mm.magika_features(big)
    assert features[0, 0] == 0  # leading space stripped
    assert features[0, -1] == 255  # trailing newline stripped


def test_wordpiece(tmp_path):
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "hello": 4, ",": 5, "un": 6,
             "##believ": 7, "##able": 8, "cafe": 9}
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps({"model": {"vocab": vocab}}))
    tok = mm.WordPiece(path)
    assert tok.ids("Hello, unbelievable CAFÉ xyz") == [4, 5, 6, 7, 8, 9, 1]
    encoded = tok.encode("hello", length=6)
    assert encoded["input_ids"].tolist() == [[2, 4, 3, 0, 0, 0]]
    assert encoded["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0]]


def test_task_metrics_ctc_time_major():
    # [T, 1, C] scores: best classes 0 1 1 0 2 -> text (1, 2)
    steps = np.eye(3, dtype=np.float32)[[0, 1, 1, 0, 2]][:, None, :]
    other = np.eye(3, dtype=np.float32)[[0, 1, 1, 0, 1]][:, None, :]
    result = mm.task_metrics("ctc", {"time_major": True}, {}, [[steps], [steps]],
                             [[steps], [other]])
    assert result["metric"] == 0.5
    assert result["cer"] == pytest.approx(1 / 4)


def test_task_metrics_classify_with_labels():
    ref = [[np.array([[3.0, 0.0, 0.0]])], [np.array([[0.0, 1.0, 0.9]])]]
    out = [[np.array([[0.0, 3.0, 0.0]])], [np.array([[0.0, 1.0, 0.9]])]]
    result = mm.task_metrics("classify", {}, {"labels": [0, 2]}, ref, out)
    assert result["metric"] == 0.5
    assert result["top1_fp32"] == 0.5 and result["top1"] == 0.0
    assert result["confident_flips"] == 1


def test_broken_reason():
    ref = [[np.array([1.0, 2.0])], [np.array([3.0, 4.0])]]
    assert mm.broken_reason(ref, ref) == ""
    assert "NaN" in mm.broken_reason(ref, [[np.array([np.nan, 1.0])], [np.array([1.0, 1.0])]])
    assert "zero" in mm.broken_reason(ref, [[np.zeros(2)], [np.zeros(2)]])
    assert "constant" in mm.broken_reason(ref, [[np.ones(2)], [np.ones(2)]])
    same = [[np.array([1.0, 2.0])], [np.array([1.0, 2.0])]]
    assert "identical" in mm.broken_reason(ref, same)


def test_spread_is_even_and_ordered():
    assert mm.spread(list(range(10)), 3) == [0, 4, 9]
    assert mm.spread([1, 2], 5) == [1, 2]


def test_parse_extra_row():
    assert am.parse_extra_row("b2=--method auto --budget 2x :: --no-bias-correction") == (
        "b2", ["--method", "auto", "--budget", "2x"], ["--no-bias-correction"])
    with pytest.raises(argparse.ArgumentTypeError):
        am.parse_extra_row("max=--method max")
    with pytest.raises(argparse.ArgumentTypeError):
        am.parse_extra_row("no-equals-sign")


def test_rows_and_extra_rows_parse():
    args = am.parse_args(["--rows", "max,ort", "--extra-row", "x=--method mse", "--quick"])
    assert args.rows == ["max", "ort", "x"]
    assert args.extra == {"x": (["--method", "mse"], [])}
    assert args.no_write and args.calib_samples == 8


def test_summary_cells():
    assert am.summary_cell({"status": "ok", "metric": 0.5, "name": "x"}, "classify") == "50.0%"
    assert am.summary_cell({"status": "ok", "metric": 0.98765, "name": "x"}, "embed") == "0.9877"
    assert am.summary_cell({"status": "broken", "metric": 0.0}, "db") == "BROKEN 0.0%"
    assert am.summary_cell({"status": "refused", "reason": "error: ..."}, "vad") == "refused"
    assert am.summary_cell({"status": "ok"}, "vad") == "no eval"
    assert am.summary_cell(None, "vad") == ""


def test_write_markdown_keeps_the_rest(tmp_path):
    path = tmp_path / "B.md"
    path.write_text(f"head\n{am.BEGIN}\nold\n{am.END}\ntail\n")
    am.write_matrix_markdown(path, "new")
    assert path.read_text() == f"head\n{am.BEGIN}\nnew\n{am.END}\ntail\n"


def test_stack_calibration_joins_on_each_batch_axis(tmp_path):
    samples = [{"x": np.full((1, 3), i, np.float32), "state": np.full((2, 1, 4), i, np.float32),
                "sr": np.array(16000)} for i in range(3)]
    mm.write_split(tmp_path / "calib", samples)
    shapes = mm.stack_calibration(tmp_path / "calib", tmp_path / "all.npz")
    assert shapes == {"x": [3, 3], "state": [2, 3, 4], "sr": []}
    with np.load(tmp_path / "all.npz") as data:
        assert data["state"][0, :, 0].tolist() == [0, 1, 2]
