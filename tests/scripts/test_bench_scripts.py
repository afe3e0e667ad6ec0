"""The benchmark scripts: argument parsing, tables, the measured-subprocess runner, the accuracy
metrics and the text-line finder, each against small exact cases."""

from __future__ import annotations

import math
import subprocess
import sys
from collections import deque
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import bench
import bench_data
import bench_metrics
from bench_measure import ERROR, OK, OOM, TIMEOUT, Measured, combine, run_measured


def test_fetch_models_is_valid_bash():
    result = subprocess.run(["bash", "-n", str(SCRIPTS / "fetch_models.sh")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------- arguments

def test_defaults():
    args = bench.parse_args([])
    assert args.models == list(bench.MODEL_KEYS)
    assert args.tools == list(bench.TOOLS)
    assert args.samples == [100, 200, 1000]
    assert (args.calib_samples, args.batch_size, args.det_size) == (100, 10, 320)
    assert args.sweep_models == ["efficientnet_lite0"]
    assert not args.no_write


def test_quick_is_small_and_writes_nothing():
    args = bench.parse_args(["--quick"])
    assert (args.calib_samples, args.det_size, args.samples) == (10, 160, [])
    assert args.no_write and args.timeout == 300.0


def test_samples_are_sorted_unique():
    assert bench.parse_args(["--samples", "1000,100,200,100"]).samples == [100, 200, 1000]


@pytest.mark.parametrize("argv", [["--samples", "100,x"], ["--samples", "0"],
                                  ["--models", "resnet"], ["--tools", "qtool entropy,TRT"],
                                  ["--det-size", "100"], ["--batch-size", "0"]])
def test_bad_arguments_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.parse_args(argv)
    assert exc.value.code == 2


def test_usable_count_cuts_to_whole_batches():
    assert bench.usable_count(100, None, 10) == 100
    assert bench.usable_count(100, 107, 8) == 96
    assert bench.usable_count(1000, 57, 10) == 50
    assert bench.usable_count(5, None, 10) == 10  # never fewer than one batch


# ---------------------------------------------------------------------------- tables

def test_markdown_table_pads_columns():
    text = bench.markdown_table(["a", "bbb"], [["xx", "1"], ["y", "22"]])
    assert text.splitlines() == ["| a  | bbb |", "|----|-----|", "| xx | 1   |", "| y  | 22  |"]


def ok_row(seconds, cpu, rss, **extra):
    return {"status": "ok", "seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": rss, **extra}


def table_cells(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()]


def test_ratios_are_over_inference():
    rows = {bench.INFER: ok_row(2.0, 3.0, 100.0),
            "qtool max": ok_row(5.0, 6.0, 300.0, calib_seconds=4.0, calib_cpu_seconds=4.5),
            "ORT MinMax": {"status": "OOM", "seconds": 9.0, "cpu_seconds": 9.0, "peak_rss_mb": 1.0}}
    bench.add_ratios(rows)
    assert (rows[bench.INFER]["ratio"], rows[bench.INFER]["cpu_ratio"]) == (1.0, 1.0)
    q = rows["qtool max"]
    assert (q["ratio"], q["cpu_ratio"], q["calib_ratio"], q["calib_cpu_ratio"]) == (2.5, 2.0, 2.0, 1.5)
    assert "ratio" not in rows["ORT MinMax"]


def test_case_table_rows_and_failures():
    rows = {
        bench.INFER: ok_row(2.0, 3.0, 100.0),
        "qtool entropy": ok_row(5.0, 6.0, 300.4, calib_seconds=2.5, calib_cpu_seconds=4.5),
        "ORT Entropy": {"status": "OOM", "seconds": 61.2, "cpu_seconds": 60.0,
                        "peak_rss_mb": 20480.0},
        "ORT MinMax": {"status": "skipped", "reason": "OOM at 200"},
    }
    bench.add_ratios(rows)
    metrics = {"metrics": {"fp32": {"top1": 0.9}, "qtool entropy": {"top1": 0.89, "agree": 0.97,
                                                                    "agree_all": 0.985}}}
    cells = table_cells(bench.case_table("classify", rows, metrics))
    assert cells[0] == ["run", *bench.TIME_HEADER, "top-1 held-out", "agree held-out", "agree all"]
    assert cells[2] == [bench.INFER, "2.0", "1.00x", "3.0", "1.00x", "", "100", "90.0%", "", ""]
    assert cells[3] == ["qtool entropy", "5.0", "2.50x", "6.0", "2.00x", "1.25x, 1.50x", "300",
                        "89.0%", "97.0%", "98.5%"]
    assert cells[4][:7] == ["ORT Entropy", "OOM after 61 s", "", "", "", "", "20480"]
    assert cells[5][:7] == ["ORT MinMax", "skipped", "", "", "", "", ""]


def test_fmt_metric():
    assert bench.fmt_metric(0.5, "pct") == "50.0%"
    assert bench.fmt_metric(math.inf, "db") == "inf"
    assert bench.fmt_metric(12.345, "db") == "12.3"
    assert bench.fmt_metric(0.99991, "cos") == "0.9999"
    assert bench.fmt_metric(None, "pct") == ""


def test_write_markdown_keeps_hand_written_text(tmp_path):
    path = tmp_path / "B.md"
    bench.write_markdown(path, "first")
    assert path.read_text() == f"# Benchmarks\n\n{bench.BEGIN}\nfirst\n{bench.END}\n"
    path.write_text(f"intro\n{bench.BEGIN}\nold\n{bench.END}\nnotes\n")
    bench.write_markdown(path, "new")
    assert path.read_text() == f"intro\n{bench.BEGIN}\nnew\n{bench.END}\nnotes\n"


# ---------------------------------------------------------------------------- measuring

def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_measured_ok_run_reports_output_and_peak():
    result = run_measured(python("import numpy; a = numpy.ones(40 * 2**20, 'u1'); print('hi')"),
                          timeout_s=60, mem_limit_mb=4096)
    assert result.status == OK and result.ok and result.reason() == ""
    assert result.stdout == "hi\n"
    assert result.peak_rss_mb >= 40  # the 40 MiB array was resident
    assert 0 < result.cpu_seconds < result.seconds * 4


def test_measured_error_gives_last_stderr_line():
    result = run_measured(python("import sys; sys.stderr.write('one\\nerror: two\\n'); sys.exit(3)"),
                          timeout_s=60, mem_limit_mb=4096)
    assert (result.status, result.returncode, result.reason()) == (ERROR, 3, "error: two")


def test_measured_timeout_kills_the_child():
    result = run_measured(python("import time; time.sleep(30)"), timeout_s=0.5, mem_limit_mb=4096)
    assert result.status == TIMEOUT and result.reason() == "timeout"
    assert result.seconds < 10


def test_measured_memory_limit_kills_the_child():
    code = "import numpy, time; a = numpy.ones(400 * 2**20, 'u1'); time.sleep(30)"
    result = run_measured(python(code), timeout_s=60, mem_limit_mb=150)
    assert result.status == OOM and result.seconds < 20
    assert result.peak_rss_mb > 150


def test_combine_adds_times_and_keeps_first_failure():
    a = Measured(OK, 1.5, 100.0, 1.0, "a", "")
    b = Measured(ERROR, 2.0, 300.0, 0.5, "", "boom", 1)
    both = combine([a, b])
    assert (both.status, both.seconds, both.peak_rss_mb, both.cpu_seconds, both.reason()) == (
        ERROR, 3.5, 300.0, 1.5, "boom")
    assert combine([a, Measured(OK, 1.0, 50.0)]).status == OK


# ---------------------------------------------------------------------------- metrics

def test_sqnr_and_cosine():
    ref = np.array([[3.0, 4.0], [1.0, 0.0]])
    out = np.array([[3.0, 3.0], [2.0, 0.0]])
    assert bench_metrics.sqnr_db(ref, out) == pytest.approx(10 * math.log10(26 / 2))
    assert bench_metrics.sqnr_db(ref, ref) == math.inf
    assert bench_metrics.mean_cosine(ref, out) == pytest.approx((21 / (5 * math.sqrt(18)) + 1) / 2)
    assert bench_metrics.mean_cosine(np.zeros((1, 2)), np.zeros((1, 2))) == 1.0


def test_classifier_metrics():
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    other = np.array([[0.6, 0.4], [0.8, 0.2], [0.1, 0.9]])
    assert bench_metrics.top1_accuracy(logits, np.array([1, 0, 0])) == pytest.approx(2 / 3)
    assert bench_metrics.top1_agreement(logits, other) == pytest.approx(2 / 3)


def one_hot(sequence, classes=5):
    return np.eye(classes)[sequence]


def test_ctc_greedy_merges_repeats_and_drops_blanks():
    probs = np.stack([one_hot([0, 2, 2, 0, 2, 3, 3, 0]), one_hot([0, 0, 0, 0, 0, 0, 0, 0])])
    assert bench_metrics.ctc_greedy(probs) == [(2, 2, 3), ()]
    same = np.stack([one_hot([2, 0, 2, 3, 0, 0, 0, 0]), one_hot([1, 0, 0, 0, 0, 0, 0, 0])])
    assert bench_metrics.text_agreement(probs, same) == 0.5


def test_mask_iou():
    ref = np.array([0.9, 0.9, 0.1, 0.1])
    out = np.array([0.9, 0.1, 0.9, 0.1])
    assert bench_metrics.mask_iou(ref, out, 0.3) == pytest.approx(1 / 3)
    assert bench_metrics.mask_iou(np.zeros(3), np.zeros(3), 0.3) == 1.0


# ---------------------------------------------------------------------------- data

def components_reference(mask: np.ndarray) -> np.ndarray:
    """Breadth-first flood fill; a component's label is the flat index of its first pixel."""
    height, width = mask.shape
    labels = np.full(mask.shape, -1)
    for start in range(height * width):
        r0, c0 = divmod(start, width)
        if not mask[r0, c0] or labels[r0, c0] >= 0:
            continue
        queue = deque([(r0, c0)])
        labels[r0, c0] = start
        while queue:
            r, c = queue.popleft()
            for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
                if 0 <= rr < height and 0 <= cc < width and mask[rr, cc] and labels[rr, cc] < 0:
                    labels[rr, cc] = start
                    queue.append((rr, cc))
    return labels


def test_label_components_matches_flood_fill():
    rng = np.random.default_rng(7)
    for _ in range(40):
        shape = tuple(rng.integers(1, 30, size=2))
        mask = rng.random(shape) < rng.uniform(0.2, 0.8)
        np.testing.assert_array_equal(bench_data.label_components(mask), components_reference(mask))
    spiral = np.ones((9, 9), dtype=bool)
    spiral[1:8, 1:8] = False
    spiral[2:7, 2:7] = True
    spiral[3:6, 3:6] = False
    spiral[1, 1] = True  # joins the two rings at a corner
    np.testing.assert_array_equal(bench_data.label_components(spiral), components_reference(spiral))


def test_dilate_2x2():
    mask = np.zeros((3, 3), dtype=bool)
    mask[1, 1] = True
    expected = np.zeros((3, 3), dtype=bool)
    expected[1:, 1:] = True
    np.testing.assert_array_equal(bench_data.dilate_2x2(mask), expected)


def test_text_boxes_one_line_grown_by_unclip():
    prob = np.zeros((20, 40), dtype=np.float32)
    prob[5:9, 4:24] = 0.9        # a 4 x 20 text line
    prob[15, 30] = 0.9           # too small
    prob[12:16, 30:38] = 0.35    # above the pixel threshold, mean below the box threshold
    # The image is twice the map's size; the dilated component spans rows 5..9, cols 4..24.
    boxes = bench_data.text_boxes(prob, (40, 80))
    h, w = 10.0, 42.0
    grow = h * w * bench_data.UNCLIP_RATIO / (2 * (h + w))
    assert boxes == [(int(10 - grow), math.ceil(20 + grow), int(8 - grow), math.ceil(50 + grow))]


def test_line_sample_keeps_aspect_and_pads():
    crop = np.full((10, 20, 3), 255, dtype=np.uint8)
    sample = bench_data.line_sample(crop, (48, 320))
    assert sample.shape == (1, 3, 48, 320) and sample.dtype == np.float32
    assert np.all(sample[..., :96] == 1.0) and np.all(sample[..., 96:] == 0.0)
    wide = bench_data.line_sample(np.zeros((10, 1000, 3), dtype=np.uint8), (48, 320))
    assert np.all(wide == -1.0)  # squeezed to the full width, black is -1


def test_folder_of_repeats_in_order(tmp_path):
    files = []
    for name in ("b.png", "a.png"):
        (tmp_path / name).write_bytes(name.encode())
        files.append(tmp_path / name)
    folder = bench_data.folder_of(files, tmp_path / "out", 5)
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["00000_b.png", "00001_a.png", "00002_b.png", "00003_a.png", "00004_b.png"]
    assert [bench_data.original_name(folder / n) for n in names[:2]] == ["b.png", "a.png"]
    assert (folder / "00003_a.png").read_bytes() == b"a.png"


def test_det_preprocess_is_ppocr_normalisation():
    pre = bench_data.det_preprocess(320)
    assert pre["resize"] == [320, 320] and pre["color"] == "BGR"
    assert (0 - pre["mean"][0]) / pre["std"][0] == -1.0
    assert (255 - pre["mean"][0]) / pre["std"][0] == 1.0


# ---------------------------------------------------------------------------- found by the benchmark

def test_negative_dim_value_is_a_dynamic_axis():
    """PP-OCR's classifier declares its input [-1, 3, ?, ?] with dim_value -1 (Paddle2ONNX)."""
    from qtool.io.model import input_specs

    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, None, None])
    value.type.tensor_type.shape.dim[0].dim_value = -1
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [value], [out])
    model = helper.make_model(graph)
    assert input_specs(model)[0].shape == (None, 3, None, None)


def test_sweep_table_one_row_per_run_and_count():
    sweep = {
        100: {bench.INFER: ok_row(2.0, 2.0, 300, ratio=1.0, cpu_ratio=1.0),
              "ORT Entropy": ok_row(30.0, 40.0, 6000, ratio=15.0, cpu_ratio=20.0)},
        1000: {bench.INFER: ok_row(20.0, 20.0, 310, ratio=1.0, cpu_ratio=1.0),
               "ORT Entropy": {"status": "OOM", "seconds": 50.0, "peak_rss_mb": 20480.0}},
    }
    cells = table_cells(bench.sweep_table(sweep))
    assert cells[0] == ["run", "samples", *bench.TIME_HEADER]
    assert [row[:3] for row in cells[2:]] == [[bench.INFER, "100", "2.0"],
                                             [bench.INFER, "1000", "20.0"],
                                             ["ORT Entropy", "100", "30.0"],
                                             ["ORT Entropy", "1000", "OOM after 50 s"]]
    assert cells[4] == ["ORT Entropy", "100", "30.0", "15.00x", "40.0", "20.00x", "", "6000"]
