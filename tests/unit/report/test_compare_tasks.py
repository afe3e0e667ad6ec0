"""The HTML report's compare section shows the sequence comparison and the metric script's
numbers of a compare report."""

import json
from types import SimpleNamespace

from qtool.report.html.compare import compare_section
from qtool.report.results import read_compare


def test_sequence_and_metrics_in_the_compare_section(tmp_path):
    report = {
        "reference": {"path": "rec.onnx"}, "candidate": {"path": "rec.int8.onnx"},
        "data": "eval/", "samples": 2, "outputs": {"y": {"sqnr_db": 15.0, "cosine": 0.98}},
        "classification": None,
        "sequence": {"output": "y", "samples": 2, "positions": 8,
                     "position_agreement_percent": 75.0, "disagreements": 2,
                     "disagreement_margins": [0.125, 0.25], "median_top1_margin": 0.5,
                     "ctc": {"blank": 0, "same_sequence_percent": 50.0,
                             "token_error_rate_percent": 20.0}},
        "metrics": {"box_f1": 0.875},
        "gates": [{"gate": "min_metric", "metric": "box_f1", "value": 0.875, "threshold": 0.9,
                   "passed": False}],
        "passed": False,
    }
    path = tmp_path / "compare.json"
    path.write_text(json.dumps(report))
    view = read_compare(path)
    assert view.metrics == {"box_f1": 0.875} and view.sequence["output"] == "y"
    html = compare_section(SimpleNamespace(compare=view))
    assert "<th>Position agreement</th><td>75.00%</td>" in html
    assert ("2 disagreements; there the reference&#x27;s top-1 led the candidate&#x27;s pick by "
            "0.125, 0.25 (its median top-1 margin over all positions: 0.5)") in html
    assert "<th>Same sequence (CTC, blank 0)</th><td>50.00%</td>" in html
    assert "<th>Token error rate</th><td>20.00%</td>" in html
    assert "<th>metric box_f1</th><td>0.875</td>" in html
    assert "<code>box_f1</code> = 0.875 (needs ≥ 0.9)" in html
    # reports written before these keys existed still read
    del report["sequence"], report["metrics"]
    path.write_text(json.dumps(report))
    assert "Position agreement" not in compare_section(SimpleNamespace(compare=read_compare(path)))
