"""`qtool report` end to end: the demo model calibrated and quantized through the CLI."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MISSING = "error: matplotlib is not installed: pip install 'qtool[report]'\n"


@pytest.fixture
def demo(qtool, tmp_path):
    model = shutil.copy(REPO / "demo" / "digits_cnn.onnx", tmp_path / "digits.onnx")
    calib = tmp_path / "digits.calib.json"
    result = qtool("calibrate", model, "--data", REPO / "demo" / "data" / "calib.npz",
                   "-o", calib, "--method", "percentile", "-q")
    assert result.code == 0, result.err
    int8 = tmp_path / "digits.int8.onnx"
    result = qtool("quantize", model, "--calib", calib, "-o", int8)
    assert result.code == 0, result.err
    return {"model": Path(model), "calib": calib, "int8": int8, "folder": tmp_path}


def test_report_writes_one_page_and_the_pngs(qtool, demo):
    out = demo["folder"] / "report.html"
    pngs = demo["folder"] / "png"
    result = qtool("report", demo["calib"], "--model", demo["int8"], "-o", out,
                   "--png-dir", pngs, "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["output"] == str(out) and summary["size_bytes"] == out.stat().st_size
    assert summary["tensors"] == len(json.loads(demo["calib"].read_text())["tensors"])
    assert summary["layers"] == 7
    assert summary["figures"] == summary["tensors"] + 1  # histograms and the weight scales
    assert sorted(Path(p).name for p in summary["png_files"]) == sorted(
        path.name for path in pngs.iterdir())
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert not [p for p in demo["folder"].iterdir() if p.name.endswith(".tmp")]


def test_text_summary_names_the_output(qtool, demo):
    out = demo["folder"] / "r.html"
    result = qtool("report", demo["calib"], "-o", out)
    assert result.code == 0, result.err
    assert result.out.startswith(f"wrote {out} (")


def test_missing_matplotlib_exits_1_with_the_install_hint(qtool, demo, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out = demo["folder"] / "report.html"
    result = qtool("report", demo["calib"], "-o", out)
    assert (result.code, result.err, result.out) == (1, MISSING, "")
    assert not out.exists()
    # --help needs no matplotlib.
    result = qtool("report", "--help")
    assert result.code == 0 and "--png-dir" in result.out


def test_user_errors_are_one_line_and_leave_the_output_alone(qtool, demo, tmp_path):
    out = tmp_path / "report.html"
    out.write_text("previous report")
    other = tmp_path / "other.json"
    other.write_text("[1, 2]")
    cases = [
        (("--compare", other), "is not a compare result file: the top level is not an object"),
        (("--sensitivity", tmp_path / "absent.json"), "sensitivity result file not found"),
        (("--model", REPO / "demo" / "digits_cnn.onnx", "--sensitivity", demo["calib"]),
         "is not a sensitivity result"),
    ]
    for extra, message in cases:
        result = qtool("report", demo["calib"], "-o", out, *extra)
        assert result.code == 1, extra
        assert result.err.count("\n") == 1 and result.err.startswith("error: "), result.err
        assert message in result.err
    result = qtool("report", tmp_path / "nothing.calib.json", "-o", out)
    assert result.code == 1 and "calibration file not found" in result.err
    result = qtool("report", demo["calib"], "-o", out / "r.html")  # a file where a folder goes
    assert result.code == 1 and f"{out} is not a folder" in result.err
    assert out.read_text() == "previous report"


def test_output_is_required_and_may_not_be_an_input(qtool, demo):
    result = qtool("report", demo["calib"])
    assert result.code == 2 and "-o" in result.err
    result = qtool("report", demo["calib"], "-o", demo["calib"])
    assert result.code == 1 and "would overwrite the input" in result.err


def test_config_table_fills_options(qtool, demo, tmp_path):
    config = tmp_path / "qtool.toml"
    pngs = tmp_path / "from-config"
    config.write_text(f'[report]\npng_dir = "{pngs}"\nmodel = "{demo["model"]}"\n')
    result = qtool("report", demo["calib"], "-o", tmp_path / "c.html", "--config", config,
                   "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["layers"] == 7 and len(list(pngs.iterdir())) == summary["figures"]
