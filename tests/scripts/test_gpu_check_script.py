"""scripts/gpu_check.sh and gpu_check.py up to their GPU steps: valid bash, the option errors,
the table, and a dry run of the demo model (calibrate and quantize through the real CLI)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import gpu_check


def test_gpu_check_is_valid_bash_and_refuses_unknown_options():
    script = str(SCRIPTS / "gpu_check.sh")
    assert subprocess.run(["bash", "-n", script], check=False).returncode == 0
    result = subprocess.run(["bash", script, "--fast"], capture_output=True, text=True, check=False)
    assert result.returncode == 2 and "unknown option --fast" in result.stderr
    help_text = subprocess.run(["bash", script, "--help"], capture_output=True, text=True, check=False)
    assert help_text.returncode == 0 and "pytest -m gpu" in help_text.stdout


def test_table_marks_failures():
    rows = [gpu_check.Row("demo", "int8", "4", "100.00%", "38.1 dB", "0.31", "0.52"),
            gpu_check.Row("demo", "int8+fp16", "3", failures=["the FP16 build has 3 INT8 layers"])]
    lines = gpu_check.table(rows).splitlines()
    assert lines[0].split()[:3] == ["model", "engine", "INT8"]
    assert lines[1].endswith("  ok")
    assert lines[2].endswith("FAILED: the FP16 build has 3 INT8 layers")


def test_dry_run_of_the_demo_model_stops_before_tensorrt(tmp_path, capsys):
    status = gpu_check.main(["--dry-run", "--models", "demo", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 0, out
    assert (tmp_path / "demo" / "digits_cnn.int8.onnx").is_file()
    assert (tmp_path / "demo" / "digits_cnn.calib.json").is_file()
    rows = [line for line in out.splitlines() if line.startswith("demo ")]
    assert len(rows) == 2 and all("pending (no GPU)" in row and row.endswith("ok") for row in rows)
