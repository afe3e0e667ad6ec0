"""The metric script loader and the example metric scripts of examples/metrics, on hand-made
outputs with hand-computed results."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from qtool.analysis.metric_script import MetricScript
from qtool.errors import QtoolError

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "metrics"


def write(tmp_path, text, name="metric.py"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_update_receives_outputs_and_inputs_when_asked(tmp_path):
    script = MetricScript(write(tmp_path, """
seen = []
def update(reference, candidate, inputs):
    seen.append((sorted(reference), sorted(candidate), sorted(inputs)))
def result():
    return {"batches": len(seen), "first": seen[0][2][0] == "x"}
"""))
    assert script.wants_inputs
    script.update({"y": np.zeros(1)}, {"y": np.ones(1)}, {"x": np.zeros(1)}, 0)
    with pytest.raises(QtoolError, match=r"result\(\) returned first = True \(bool\); metrics "
                                         r"must be numbers"):
        script.result()
    plain = MetricScript(write(tmp_path, """
calls = 0
def update(reference, candidate):
    global calls
    calls += len(reference["y"])
def result():
    return {"samples": calls, "half": calls / 2}
""", "plain.py"))
    assert not plain.wants_inputs
    plain.update({"y": np.zeros(3)}, {"y": np.zeros(3)}, {"x": np.zeros(3)}, 0)
    assert plain.result() == {"samples": 3.0, "half": 1.5}


def test_each_load_starts_from_fresh_state(tmp_path):
    path = write(tmp_path, "n = 0\ndef update(r, c):\n    global n\n    n += 1\n"
                           "def result():\n    return {'n': n}\n")
    first = MetricScript(path)
    first.update({}, {}, {}, 0)
    assert first.result() == {"n": 1.0}
    assert MetricScript(path).result() == {"n": 0.0}


@pytest.mark.parametrize("text, message", [
    ("def result():\n    return {}\n", r"defines no function update\(\)$"),
    ("update = 3\ndef result():\n    return {}\n", "update is a int, not a function$"),
    ("import not_a_module_anywhere\n",
     (r"failed while running its top level at .*metric.py:1: ModuleNotFoundError: No module "
      r"named 'not_a_module_anywhere' \(run with -vv for the traceback\)$")),
])
def test_broken_scripts_fail_in_one_line(tmp_path, text, message):
    with pytest.raises(QtoolError, match=message) as caught:
        MetricScript(write(tmp_path, text))
    assert "\n" not in str(caught.value) and str(caught.value).startswith("metric script ")


def test_errors_while_running_name_the_call_and_line(tmp_path):
    script = MetricScript(write(tmp_path, """
def update(reference, candidate):
    raise ValueError("bad batch")
def result():
    return [1, 2]
"""))
    with pytest.raises(QtoolError, match=r"failed while calling update\(\) on batch 4 at "
                                         r".*metric.py:3: ValueError: bad batch"):
        script.update({}, {}, {}, 4)
    with pytest.raises(QtoolError, match=r"result\(\) returned a list; it must return a dict of "
                                         r"metric name -> number"):
        script.result()


@pytest.mark.parametrize("returned, message", [
    ("{'f1': 'high'}", r"returned f1 = 'high' \(str\); metrics must be numbers"),
    ("{'a b': 1}", r"returned the metric name 'a b'"),
    ("{1: 1}", r"returned the metric name 1;"),
    ("None", r"returned a NoneType"),
])
def test_wrong_return_types(tmp_path, returned, message):
    script = MetricScript(write(tmp_path, f"def update(r, c):\n    pass\n"
                                          f"def result():\n    return {returned}\n"))
    with pytest.raises(QtoolError, match=message):
        script.result()


def test_numpy_numbers_are_numbers(tmp_path):
    script = MetricScript(write(tmp_path, "import numpy as np\ndef update(r, c):\n    pass\n"
                                          "def result():\n    return {'a': np.float32(0.5), "
                                          "'b': np.int64(3), 'c': float('nan')}\n"))
    values = script.result()
    assert values["a"] == 0.5 and values["b"] == 3.0 and np.isnan(values["c"])


# -- the shipped examples ---------------------------------------------------------------------

def yolo_head(anchors):
    """[1, 4 + 2 classes, anchors] from (cx, cy, w, h, class, score) tuples."""
    head = np.zeros((1, 6, len(anchors)), dtype=np.float32)
    for i, (cx, cy, w, h, cls, score) in enumerate(anchors):
        head[0, :4, i] = (cx, cy, w, h)
        head[0, 4 + cls, i] = score
    return head


def test_yolo_box_f1_example():
    script = MetricScript(EXAMPLES / "yolo_box_f1.py")
    reference = yolo_head([
        (10, 10, 10, 10, 0, 0.9),   # [5, 5, 15, 15] class 0
        (11, 10, 10, 10, 0, 0.8),   # IoU 90/110 with the first, same class: suppressed
        (11, 10, 10, 10, 1, 0.7),   # the same box in class 1: kept (NMS is per class)
        (50, 50, 20, 20, 1, 0.2),   # below the 0.25 score threshold
        (80, 80, 10, 10, 0, 0.5),
    ])
    candidate = yolo_head([
        (16, 10, 10, 10, 0, 0.9),   # IoU 40/160 with the reference's box: FP, and that one FN
        (11, 10, 10, 10, 0, 0.1),   # dropped
        (11, 10, 10, 10, 1, 0.7),   # TP
        (50, 50, 20, 20, 1, 0.3),   # now above the threshold: FP
        (80, 80, 10, 10, 1, 0.5),   # class changed: FP, and the reference's class-0 box FN
    ])
    script.update({"output0": reference}, {"output0": candidate}, {}, 0)
    assert script.result() == {"box_precision": 0.25, "box_recall": 1 / 3, "box_f1": 2 / 7,
                               "reference_boxes": 3.0, "candidate_boxes": 4.0}
    script.update({"output0": reference}, {"output0": reference}, {}, 1)  # 3 more TPs
    assert script.result()["box_f1"] == 2 * 4 / (2 * 4 + 3 + 2)


def probability_map(regions, size=12):
    prob = np.zeros((1, 1, size, size), dtype=np.float32)
    for (rows, cols), value in regions:
        prob[0, 0, rows, cols] = value
    return prob


A = ((slice(1, 4), slice(1, 5)), 0.875)              # 3 x 4: box [1, 1, 5, 4]
U = [((slice(6, 9), 6), 0.75), ((slice(6, 9), 9), 0.75),  # a U: the arms join only at row 9
     ((9, slice(6, 10)), 0.75)]
DIAGONAL = ((10, 10), 0.875)                          # touches the U only at a corner
THIN = ((slice(1, 3), slice(8, 11)), 0.875)           # 2 rows: too thin
FAINT = ((slice(5, 8), slice(1, 4)), 0.375)           # above 0.3, mean below 0.6


def test_db_box_f1_example():
    script = MetricScript(EXAMPLES / "db_box_f1.py")
    reference = probability_map([A, *U, DIAGONAL, THIN, FAINT])
    # the reference's boxes: A and the U's [6, 6, 10, 10] (4-connected: the diagonal pixel is a
    # component of its own, too small; with the arms unjoined they would be 1 pixel wide)
    weak_u = [(where, 0.5) for where, _ in U]
    extra = ((slice(1, 4), slice(8, 11)), 0.75)       # a 3 x 3 box only the candidate finds
    candidate = probability_map([A, *weak_u, extra])
    script.update({"maps": reference}, {"maps": candidate}, {}, 0)
    assert script.result() == {"box_precision": 0.5, "box_recall": 0.5, "box_f1": 0.5,
                               "reference_boxes": 2.0, "candidate_boxes": 2.0}


def test_db_components_join_runs_through_later_rows():
    spec = importlib.util.spec_from_file_location("db_example", EXAMPLES / "db_box_f1.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(EXAMPLES))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(EXAMPLES))
    prob = probability_map([A, *U, DIAGONAL, THIN, FAINT])[0, 0]
    assert module.text_boxes(prob).tolist() == [[1, 1, 5, 4], [6, 6, 10, 10]]
    rows, starts, ends = module.runs(prob > 0.3)
    ids = module.components(rows, starts, ends, prob.shape[0])
    assert len(set(ids.tolist())) == 5  # A, U, diagonal pixel, THIN, FAINT
    assert module.text_boxes(np.zeros((5, 5))).shape == (0, 4)


def test_no_boxes_on_either_side_is_full_agreement():
    script = MetricScript(EXAMPLES / "db_box_f1.py")
    empty = np.zeros((2, 1, 8, 8), dtype=np.float32)
    script.update({"maps": empty}, {"maps": empty}, {}, 0)
    assert script.result()["box_f1"] == 1.0


def test_top5_example():
    script = MetricScript(EXAMPLES / "top5.py")
    reference = np.array([[7, 6, 5, 4, 3, 2, 1],      # top 5: 0 1 2 3 4
                          [0, 0, 0, 0, 0, 0, 1]],     # ties to the lower index: 6 0 1 2 3
                         dtype=np.float32)
    candidate = np.array([[1, 2, 3, 4, 5, 6, 7],      # 6 5 4 3 2: no class 0, shares 2 3 4
                          [1, 0, 0, 0, 0, 0, 0.5]],   # 0 6 1 2 3: holds 6, shares all five
                         dtype=np.float32)
    script.update({"logits": reference}, {"logits": candidate}, {}, 0)
    assert script.result() == {"top5_contains_reference_top1_percent": 50.0,
                               "top5_overlap_percent": 80.0}


def test_yolo_example_class_agnostic_nms():
    script = MetricScript(EXAMPLES / "yolo_box_f1.py")
    script._update.__globals__["NMS_PER_CLASS"] = False
    head = yolo_head([(10, 10, 10, 10, 0, 0.9), (11, 10, 10, 10, 1, 0.7)])  # IoU 90/110
    script.update({"y": head}, {"y": head}, {}, 0)
    assert script.result()["reference_boxes"] == 1.0  # the class-1 box is suppressed too
