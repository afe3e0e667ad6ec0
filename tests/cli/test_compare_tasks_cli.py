"""`qtool compare` on sequences, with a metric script, its gates, and failing fast.

Hand-made outputs go through the real command: the reference model copies its input `ref` to
its outputs, the candidate copies `cand`, so compare sees exactly the arrays of the data file."""

import json
from pathlib import Path

import numpy as np
import pytest

from qtool.backends.onnxruntime.runner import OnnxRunner
from tests.helpers.demo import write_config
from tests.helpers.sequences import CANDIDATE, REFERENCE
from tests.tiny_models import pass_through, save

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "metrics"


def models(tmp_path, shape, outputs=("y",)):
    ref = save(pass_through("ref", shape, outputs), tmp_path / "ref.onnx")
    cand = save(pass_through("cand", shape, outputs), tmp_path / "cand.onnx")
    return ref, cand


def hand_made(tmp_path, ref, cand, name="data.npz"):
    path = tmp_path / name
    np.savez(path, ref=ref, cand=cand)
    return path


@pytest.fixture
def sequence_case(tmp_path):
    ref, cand = models(tmp_path, ["N", 4, 3])
    return ref, cand, hand_made(tmp_path, REFERENCE, CANDIDATE)


@pytest.fixture
def runs(monkeypatch):
    """How many times any model ran a batch."""
    count = {"runs": 0}
    original = OnnxRunner.run

    def counting(self, *args, **kwargs):
        count["runs"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(OnnxRunner, "run", counting)
    return count


def test_ctc_sequence_report_and_gates(qtool, sequence_case, tmp_path):
    ref, cand, data = sequence_case
    report = tmp_path / "report.json"
    result = qtool("compare", ref, cand, "--data", data, "--ctc-blank", 0, "-o", report,
                   "--max-metric", "token_error_rate_percent=20",
                   "--min-metric", "same_sequence_percent=50",
                   "--max-flips-above-margin", "1:0.2")
    assert result.code == 0, result.err
    assert "sequence (y, 2 samples, 8 positions): position agreement 75.00%" in result.out
    assert ("2 disagreements; there the reference's top-1 led the candidate's pick by 0.125, "
            "0.25 (its median top-1 margin over all positions: 0.5)") in result.out
    assert ("CTC greedy decoding (blank 0): same sequence 1/2 (50.00%), token error rate 20.00% "
            "(1 edits over 5 reference tokens)") in result.out
    saved = json.loads(report.read_text())
    assert saved["sequence"]["ctc"]["token_error_rate_percent"] == 20.0
    assert saved["sequence"]["position_agreement_percent"] == 75.0
    assert [g["gate"] for g in saved["gates"]] == ["max_flips_above_margin", "min_metric",
                                                   "max_metric"]
    failing = qtool("compare", ref, cand, "--data", data, "--ctc-blank", 0,
                    "--max-metric", "token_error_rate_percent=10",
                    "--max-flips-above-margin", "0:0.2")
    assert failing.code == 3
    assert failing.err.strip() == (
        "error: accuracy gate failed: flips_above_margin_0.2[y] 1 > 0 "
        "(--max-flips-above-margin); token_error_rate_percent 20 > 10 (--max-metric)")


def test_sequence_detected_only_for_probabilities(qtool, tmp_path):
    ref, cand = models(tmp_path, ["N", 4, 3])
    probabilities = hand_made(tmp_path, REFERENCE, CANDIDATE)
    result = qtool("compare", ref, cand, "--data", probabilities, "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["sequence"]["position_agreement_percent"] == 75.0
    logits = hand_made(tmp_path, np.log(REFERENCE + 1) * 3, np.log(CANDIDATE + 1) * 3, "l.npz")
    result = qtool("compare", ref, cand, "--data", logits, "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["sequence"] is None
    result = qtool("compare", ref, cand, "--data", logits, "--task", "sequence", "--json")
    assert json.loads(result.out)["sequence"]["position_agreement_percent"] == 75.0


def test_classification_on_a_sequence_output_fails_at_the_first_batch(qtool, tmp_path, runs):
    ref, cand = models(tmp_path, ["N", 4, 3])
    data = hand_made(tmp_path, np.repeat(REFERENCE, 3, axis=0), np.repeat(CANDIDATE, 3, axis=0))
    result = qtool("compare", ref, cand, "--data", data, "--batch-size", 2, "--task",
                   "classification")
    assert result.code == 1
    assert result.err.strip() == ("error: output 'y' has shape [2, 4, 3]; classification needs "
                                  "scores of shape [batch, classes]; scores per position "
                                  "[batch, positions, classes] are --task sequence")
    assert runs["runs"] == 2  # the first of three batches, both models


def test_task_sequence_needs_a_rank_3_output(qtool, tmp_path):
    ref, cand = models(tmp_path, ["N", 5])
    data = hand_made(tmp_path, np.ones((2, 5), np.float32), np.ones((2, 5), np.float32))
    result = qtool("compare", ref, cand, "--data", data, "--ctc-blank", 0)
    assert result.code == 1
    assert result.err.strip() == ("error: no output has shape [batch, positions, classes] for "
                                  "--task sequence (outputs: y [2, 5])")
    result = qtool("compare", ref, cand, "--data", data, "--ctc-blank", 0, "--labels", data)
    assert result.code == 2 and "choose one" in result.err


def test_a_report_path_that_cannot_be_written_fails_before_any_inference(qtool, sequence_case,
                                                                         tmp_path, runs):
    ref, cand, data = sequence_case
    (tmp_path / "afile").write_text("not a folder")
    path = tmp_path / "afile" / "report.json"
    result = qtool("compare", ref, cand, "--data", data, "-o", path)
    assert result.code == 1
    assert result.err.strip() == f"error: cannot write {path}: {path.parent} is not a folder"
    assert runs["runs"] == 0


def test_a_missing_report_folder_is_made(qtool, sequence_case, tmp_path):
    ref, cand, data = sequence_case
    path = tmp_path / "new" / "deeper" / "report.json"
    result = qtool("compare", ref, cand, "--data", data, "--ctc-blank", 0, "-o", path)
    assert result.code == 0, result.err
    assert json.loads(path.read_text())["sequence"]["ctc"] is not None


METRIC = """
import numpy as np
agree = total = 0
def update(reference, candidate, inputs):
    global agree, total
    assert set(inputs) == {"ref", "cand"}
    a, b = reference["y"].argmax(-1), candidate["y"].argmax(-1)
    agree += int((a == b).sum())
    total += a.size
def result():
    return {"argmax_agreement": agree / total if total else 0.0, "positions": total}
"""


def test_metric_script_gates_pass_and_fail(qtool, sequence_case, tmp_path):
    ref, cand, data = sequence_case
    script = tmp_path / "metric.py"
    script.write_text(METRIC)
    result = qtool("compare", ref, cand, "--data", data, "--metric-script", script, "--json",
                   "--min-metric", "argmax_agreement=0.75", "--max-metric", "positions=8")
    assert result.code == 0, result.err
    saved = json.loads(result.out)
    assert saved["metrics"] == {"argmax_agreement": 0.75, "positions": 8.0}
    assert saved["metric_script"] == str(script)
    result = qtool("compare", ref, cand, "--data", data, "--metric-script", script,
                   "--min-metric", "argmax_agreement=0.8")
    assert result.code == 3
    assert result.err.strip() == ("error: accuracy gate failed: argmax_agreement 0.75 < 0.8 "
                                  "(--min-metric)")
    assert "metrics of " in result.out and "argmax_agreement  0.75" in result.out


def test_metric_script_mistakes_end_in_one_line(qtool, sequence_case, tmp_path, runs):
    ref, cand, data = sequence_case
    data6 = hand_made(tmp_path, np.repeat(REFERENCE, 3, axis=0), np.repeat(CANDIDATE, 3, axis=0),
                      "six.npz")
    script = tmp_path / "metric.py"
    script.write_text("def update(reference, candidate):\n    pass\n"
                      "def result():\n    return [0.5]\n")
    result = qtool("compare", ref, cand, "--data", data6, "--batch-size", 2,
                   "--metric-script", script)
    assert result.code == 1
    assert result.err.strip() == (f"error: metric script {script}: result() returned a list; it "
                                  f"must return a dict of metric name -> number")
    assert runs["runs"] == 2  # checked on the first batch
    script.write_text("def update(reference, candidate):\n    return 1 / 0\n"
                      "def result():\n    return {}\n")
    result = qtool("compare", ref, cand, "--data", data, "--metric-script", script)
    assert result.code == 1
    assert result.err.strip() == (f"error: metric script {script} failed while calling update() "
                                  f"on batch 0 at {script}:2: ZeroDivisionError: division by zero "
                                  f"(run with -vv for the traceback)")
    script.write_text("n = 0\ndef update(reference, candidate):\n    pass\n"
                      "def result():\n    return {'rate': 1 / n}\n")
    result = qtool("compare", ref, cand, "--data", data, "--metric-script", script)
    assert result.err.strip() == (f"error: metric script {script} failed while calling result() "
                                  f"after the first batch (to check the metric names) at "
                                  f"{script}:5: ZeroDivisionError: division by zero (run with "
                                  f"-vv for the traceback)")
    runs["runs"] = 0
    script.write_text("import numpy\nraise RuntimeError('no config')\n")
    result = qtool("compare", ref, cand, "--data", data, "--metric-script", script)
    assert result.code == 1 and runs["runs"] == 0
    assert "failed while running its top level" in result.err
    result = qtool("compare", ref, cand, "--data", data, "--metric-script", tmp_path / "nope.py")
    assert result.err.strip() == f"error: metric script not found: {tmp_path / 'nope.py'}"
    assert runs["runs"] == 0
    # a gate on a name nobody measures: after the first batch, not after all of them
    script.write_text(METRIC)
    result = qtool("compare", ref, cand, "--data", data6, "--batch-size", 2, "--metric-script",
                   script, "--min-metric", "f1=0.9")
    assert result.code == 2
    assert result.err.strip() == ("error: --min-metric/--max-metric f1: no metric of that name "
                                  "(measured: position_agreement_percent, argmax_agreement, "
                                  "positions)")
    assert runs["runs"] == 2
    result = qtool("compare", ref, cand, "--data", data, "--min-metric", "f1")
    assert result.code == 2 and "--min-metric takes NAME=VALUE" in result.err


def test_top5_example_through_compare_and_config(qtool, tmp_path):
    ref, cand = models(tmp_path, ["N", 7])
    reference = np.array([[7, 6, 5, 4, 3, 2, 1], [0, 0, 0, 0, 0, 0, 1]], np.float32)
    candidate = np.array([[1, 2, 3, 4, 5, 6, 7], [1, 0, 0, 0, 0, 0, 0.5]], np.float32)
    data = hand_made(tmp_path, reference, candidate)
    config = tmp_path / "sub" / "compare.toml"
    config.parent.mkdir()
    (tmp_path / "sub" / "metrics").mkdir()
    (tmp_path / "sub" / "metrics" / "top5.py").write_text((EXAMPLES / "top5.py").read_text())
    config.write_text('[compare]\nmetric_script = "metrics/top5.py"\n'
                      'min_metric = ["top5_overlap_percent=80"]\n'
                      'max_flips_above_margin = "0:100"\ntask = "classification"\n')
    result = qtool("compare", ref, cand, "--data", data, "--config", config, "--json")
    assert result.code == 0, result.err
    saved = json.loads(result.out)
    assert saved["metrics"] == {"top5_contains_reference_top1_percent": 50.0,
                                "top5_overlap_percent": 80.0}
    assert saved["classification"]["disagreement_margins"] == [1.0, 6.0]
    result = qtool("compare", ref, cand, "--data", data, "--config", config,
                   "--max-flips-above-margin", "0:5")
    assert result.code == 3
    assert "flips_above_margin_5[y] 1 > 0 (--max-flips-above-margin)" in result.err


def test_pipeline_compare_table_runs_the_metric_script(qtool, demo_copy):
    (demo_copy / "configs" / "top5.py").write_text((EXAMPLES / "top5.py").read_text())
    config = write_config(demo_copy, extra_compare='metric_script = "top5.py"\n'
                                                   'min_metric = "top5_overlap_percent=50"\n'
                                                   'max_flips_above_margin = "1000:0"')
    result = qtool("pipeline", config)
    assert result.code == 0, result.err + result.out
    summary = json.loads((demo_copy / "out" / "summary.json").read_text())
    compare = summary["steps"]["compare"]
    assert set(compare["metrics"]) == {"top5_contains_reference_top1_percent",
                                       "top5_overlap_percent"}
    assert summary["metrics"]["compare"]["metrics"] == compare["metrics"]
    assert [g["gate"] for g in compare["gates"]][-2:] == ["max_flips_above_margin", "min_metric"]
    assert "top5_overlap_percent" in compare["detail"]


def test_pipeline_checks_the_metric_script_before_calibrating(qtool, demo_copy):
    (demo_copy / "configs" / "broken.py").write_text("def update(reference, candidate):\n"
                                                     "    pass\n")
    config = write_config(demo_copy, extra_compare='metric_script = "broken.py"')
    result = qtool("pipeline", config)
    assert result.code == 1
    assert result.err.strip() == (f"error: metric script {demo_copy / 'configs' / 'broken.py'} "
                                  f"defines no function result()")
    summary = json.loads((demo_copy / "out" / "summary.json").read_text())
    assert summary["steps"] == {}  # nothing ran
    config = write_config(demo_copy, extra_compare='min_metric = "f1"')
    result = qtool("pipeline", config)
    assert result.code == 2 and "[compare] min_metric takes NAME=VALUE" in result.err


def test_the_text_detector_config_is_valid_and_its_script_exists():
    from qtool.config import load_config
    from qtool.pipeline import check_tables

    path = Path(__file__).resolve().parents[2] / "configs" / "text_detector.toml"
    config = load_config(path)
    check_tables(config, path)
    assert (path.parent / config["compare"]["metric_script"]).resolve() == \
        (EXAMPLES / "db_box_f1.py").resolve()
