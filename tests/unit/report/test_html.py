"""The HTML report of the demo model, parsed back: a figure per observed tensor, the calibration
file's amax, every method's amax as the threshold functions compute it, weight scales,
sensitivity and compare results, and nothing fetched from outside the page."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from qtool.calib.api import CalibrateOptions, calibrate
from qtool.calib.calibfile import read_calibration, write_calibration
from qtool.calib.routes import tensors_to_calibrate
from qtool.errors import MissingDependency, QtoolError
from qtool.io.model import load_model, save_model
from qtool.quantize.api import quantize_model, record_provenance
from qtool.report.api import write_report
from qtool.report.html import fmt_percent
from qtool.thresholds import compute_amax
from qtool.thresholds.cost import clipped_fraction

REPO = Path(__file__).resolve().parents[3]
DEMO_MODEL = REPO / "demo" / "digits_cnn.onnx"
DEMO_CALIB = REPO / "demo" / "data" / "calib.npz"
DEMO_TEST = REPO / "demo" / "data" / "test.npz"
DEMO_LABELS = REPO / "demo" / "data" / "test_labels.npy"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ReportParser(HTMLParser):
    """Collects the report's machine-readable rows (see qtool.report.html) and every URL."""

    def __init__(self):
        super().__init__()
        self.tensors: dict[str, dict] = {}
        self.layers: list[str] = []
        self.ranked: list[tuple[str, str]] = []    # (name, text of its row)
        self.outputs: list[str] = []
        self.urls: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.tags: list[str] = []
        self.sortable: list[str] = []
        self._stack: list[str] = []                # open tr kinds
        self._current: dict | None = None
        self._ranked_text: list[str] | None = None
        self._in_th_of: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        for key in ("src", "href"):
            if key in attrs:
                self.urls.append((tag, key, attrs[key]))
        if tag == "th" and "data-sort" in attrs:
            self.sortable.append("")
            self._in_th_of = "sort"
        if tag in ("td", "span") and self._ranked_text is not None:
            self._ranked_text.append(" ")  # cells and badges are separate words
        if tag != "tr":
            if tag == "img" and self._current is not None:
                self._current["images"].append(attrs.get("src", ""))
            return
        kind = "other"
        if "data-tensor" in attrs:
            kind = "tensor"
            self._current = {"amax": attrs["data-amax"], "methods": {}, "images": [],
                             "chosen": None}
            self.tensors[attrs["data-tensor"]] = self._current
        elif "data-method" in attrs and self._current is not None:
            self._current["methods"][attrs["data-method"]] = attrs["data-amax"]
            if "chosen" in (attrs.get("class") or ""):
                self._current["chosen"] = attrs["data-method"]
        elif "data-layer" in attrs:
            self.layers.append(attrs["data-layer"])
        elif "data-ranked" in attrs:
            kind = "ranked"
            self._ranked_text = [attrs["data-ranked"]]
        elif "data-output" in attrs:
            self.outputs.append(attrs["data-output"])
        self._stack.append(kind)

    def handle_endtag(self, tag):
        if tag == "th":
            self._in_th_of = None
        if tag != "tr" or not self._stack:
            return
        kind = self._stack.pop()
        if kind == "tensor":
            self._current = None
        elif kind == "ranked":
            name, *text = self._ranked_text
            self.ranked.append((name, " ".join("".join(text).split())))
            self._ranked_text = None

    def handle_data(self, data):
        if self._ranked_text is not None:
            self._ranked_text.append(data)
        if self._in_th_of == "sort":
            self.sortable[-1] += data


def parse(path: Path) -> ReportParser:
    parser = ReportParser()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Demo model calibrated in a temporary folder, its Q/DQ model, compare and sensitivity."""
    folder = tmp_path_factory.mktemp("report")
    result = calibrate(DEMO_MODEL, DEMO_CALIB, CalibrateOptions(method="entropy"))
    calib = folder / "digits.calib.json"
    write_calibration(result.calibration, calib, result.histograms)
    model = shutil.copy(DEMO_MODEL, folder / "digits.onnx")
    quantized, _ = quantize_model(load_model(model), result.calibration.amax)
    record_provenance(quantized, source_sha256=result.calibration.model_sha256)
    int8 = folder / "digits.int8.onnx"
    save_model(quantized, int8)

    from qtool.analysis.compare import CompareOptions, compare_models
    from qtool.analysis.gates import Gates
    from qtool.analysis.sensitivity import SensitivityOptions, measure_sensitivity

    compared = compare_models(model, int8, DEMO_TEST, CompareOptions(
        labels=str(DEMO_LABELS), gates=Gates(min_sqnr=200.0, min_cosine=-1.0)))
    compare = folder / "compare.json"
    compare.write_text(json.dumps(compared.to_dict()))
    ranked = measure_sensitivity(model, calib, DEMO_TEST, SensitivityOptions(
        num_samples=16, eval_samples=64, labels=str(DEMO_LABELS),
        target=Gates(min_agreement=95.0)))
    sensitivity = folder / "sensitivity.json"
    sensitivity.write_text(json.dumps(ranked.to_dict()))
    return {"folder": folder, "calib": calib, "model": Path(model), "int8": int8,
            "compare": compare, "compare_result": compared.to_dict(),
            "sensitivity": sensitivity, "sensitivity_result": ranked.to_dict()}


@pytest.fixture(scope="module")
def page(demo):
    out = demo["folder"] / "report.html"
    pngs = demo["folder"] / "figures"
    result = write_report(demo["calib"], out, model=demo["int8"], compare=demo["compare"],
                          sensitivity=demo["sensitivity"], png_dir=pngs)
    return {"path": out, "parsed": parse(out), "result": result, "pngs": pngs}


def test_a_histogram_figure_for_every_observed_tensor(demo, page):
    parsed = page["parsed"]
    observed = tensors_to_calibrate(load_model(DEMO_MODEL))
    assert list(parsed.tensors) == observed
    assert set(observed) == set(read_calibration(demo["calib"]).tensors)
    for name, row in parsed.tensors.items():
        assert len(row["images"]) == 1, name
        prefix = "data:image/png;base64,"
        assert row["images"][0].startswith(prefix)
        png = base64.b64decode(row["images"][0][len(prefix):], validate=True)
        assert png.startswith(PNG_SIGNATURE)
        assert Image.open(io.BytesIO(png)).size == (320, 160)


def test_chosen_amax_are_the_calibration_files(demo, page):
    calib = read_calibration(demo["calib"])
    for name, row in page["parsed"].tensors.items():
        assert float(row["amax"]) == calib.tensors[name].amax
        assert row["chosen"] == calib.method
        assert float(row["methods"][calib.method]) == calib.tensors[name].amax


def test_each_method_amax_is_what_the_threshold_functions_return(demo, page):
    calib = read_calibration(demo["calib"])
    histograms = calib.load_histograms()
    for name, row in page["parsed"].tensors.items():
        assert list(row["methods"]) == ["max", "percentile", "mse", "entropy"]
        hist = histograms[name]
        for method, shown in row["methods"].items():
            params = calib.params if method == calib.method else {}
            want = compute_amax(method, hist.hist, hist.edges, abs_max=hist.abs_max, **params)
            assert float(shown) == want, (name, method)


def test_clipped_column_shows_the_chosen_thresholds_clipped_mass(demo, page):
    calib = read_calibration(demo["calib"])
    histograms = calib.load_histograms()
    text = page["path"].read_text(encoding="utf-8")
    for index, (name, tensor) in enumerate(calib.tensors.items(), 1):
        hist = histograms[name]
        clipped = clipped_fraction(hist.hist, hist.edges, tensor.amax, hist.abs_max)
        row = text[text.index(f'<tr id="tensor-{index}"'):]
        row = row[:row.index("<table")]
        assert f'data-v="{clipped!r}">{fmt_percent(clipped)}</td>' in row, name
    assert any(label.startswith("clipped") for label in page["parsed"].sortable)


def test_the_page_is_self_contained(page):
    parsed = page["parsed"]
    for tag, key, value in parsed.urls:
        if tag == "img":
            assert value.startswith("data:image/png;base64,")
        else:
            assert key == "href" and value.startswith("#"), value
    assert "link" not in parsed.tags and "iframe" not in parsed.tags
    text = page["path"].read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text and "<script src" not in text


def test_weight_layers_sensitivity_and_compare_sections(demo, page):
    parsed = page["parsed"]
    assert parsed.layers == ["stem.conv", "res.conv1.conv", "res.conv2.conv", "branch1x1.conv",
                             "branch3x3.conv", "fc", "head.matmul"]
    ranking = demo["sensitivity_result"]["ranking"]
    kept = demo["sensitivity_result"]["fallback"]["excluded"]
    assert [name for name, _ in parsed.ranked] == [entry["node"] for entry in ranking]
    for name, text in parsed.ranked:
        assert ("kept" in text.split()) == (name in kept), name
    assert parsed.outputs == list(demo["compare_result"]["outputs"])
    # 200 dB is out of INT8's reach, cosine >= -1 always holds.
    gates = demo["compare_result"]["gates"]
    assert [gate["passed"] for gate in gates] == [False, True]
    section = page["path"].read_text(encoding="utf-8").split('id="compare"')[1]
    badges = re.findall(r'<span class="badge (ok|fail)">', section)
    assert badges == ["fail", "ok"]


def test_compare_disagreements_and_their_margins(demo, tmp_path):
    result = json.loads(json.dumps(demo["compare_result"]))
    assert result["classification"]["disagreements"] <= 2  # the demo agrees almost everywhere
    result["classification"].update(disagreements=2, disagreement_margins=[0.0125, 1.5],
                                    median_top1_margin=6.25)
    compare = tmp_path / "compare.json"
    compare.write_text(json.dumps(result))
    out = tmp_path / "report.html"
    write_report(demo["calib"], out, compare=compare)
    section = out.read_text(encoding="utf-8").split('id="compare"')[1]
    assert ("2 disagreements; there the reference&#x27;s top-1 led the candidate&#x27;s pick by "
            "0.0125, 1.5 (its median top-1 margin over all samples: 6.25)") in section


def test_sensitivity_result_as_plain_json(demo, tmp_path):
    ranking = [
        {"rank": 1, "node": "res.conv1.conv", "op_type": "Conv", "sqnr_db": 2.5, "cosine": 0.6},
        {"rank": 2, "node": "fc", "op_type": "Gemm", "sqnr_db": "inf", "cosine": None},
        {"rank": 3, "node": "stem.conv", "op_type": "Conv", "sqnr_db": 40.0, "cosine": 0.99},
    ]
    path = tmp_path / "sensitivity.json"
    path.write_text(json.dumps({"samples": 8, "all_quantized": {"sqnr_db": 2.0},
                                "ranking": ranking,
                                "fallback": {"target": {"min_sqnr": 20}, "excluded":
                                             ["res.conv1.conv"], "passed": True,
                                             "final": {"sqnr_db": 25.0}}}))
    out = tmp_path / "s.html"
    result = write_report(demo["calib"], out, sensitivity=path)
    parsed = parse(out)
    assert [name for name, _ in parsed.ranked] == ["res.conv1.conv", "fc", "stem.conv"]
    texts = dict(parsed.ranked)
    assert texts["res.conv1.conv"] == "1 res.conv1.conv kept Conv 2.5 0.6"
    assert texts["fc"] == "2 fc Gemm ∞ n/a"
    assert texts["stem.conv"] == "3 stem.conv Conv 40 0.99"
    assert result.figures == len(parsed.tensors) + 1  # the ranking chart


def test_png_dir_holds_every_figure(page):
    files = sorted(path.name for path in page["pngs"].iterdir())
    tensors = list(page["parsed"].tensors)
    expected = [f"hist-{i:03d}-{name}.png" for i, name in enumerate(tensors, 1)]
    assert files == sorted(expected + ["sensitivity.png", "weight-scales.png"])
    for name in files:
        assert (page["pngs"] / name).read_bytes().startswith(PNG_SIGNATURE)
    assert page["result"].figures == len(files)


def test_fp32_model_gives_the_same_weight_scales_as_its_qdq_model(demo, page, tmp_path):
    out = tmp_path / "fp32.html"
    write_report(demo["calib"], out, model=demo["model"])
    assert parse(out).layers == page["parsed"].layers


def test_missing_matplotlib_is_one_clear_error(demo, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out = tmp_path / "report.html"
    with pytest.raises(MissingDependency) as error:
        write_report(demo["calib"], out)
    assert str(error.value) == "matplotlib is not installed: pip install 'qtool[report]'"
    assert not out.exists()


def test_another_models_file_is_refused(demo, tmp_path):
    other = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "other",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])]))
    path = tmp_path / "other.onnx"
    onnx.save_model(other, path)
    out = tmp_path / "report.html"
    with pytest.raises(QtoolError, match="different model"):
        write_report(demo["calib"], out, model=path)
    # A Q/DQ model that records another source model is refused as well.
    quantized = load_model(demo["int8"])
    record_provenance(quantized, source_sha256="0" * 64)
    save_model(quantized, tmp_path / "foreign.int8.onnx")
    with pytest.raises(QtoolError, match="quantized from a different model"):
        write_report(demo["calib"], out, model=tmp_path / "foreign.int8.onnx")
    assert not out.exists()


def test_results_of_the_wrong_kind_are_refused(demo, tmp_path):
    out = tmp_path / "report.html"
    out.write_text("previous")
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"outputs": []}))
    with pytest.raises(QtoolError, match="is not a compare result"):
        write_report(demo["calib"], out, compare=wrong)
    with pytest.raises(QtoolError, match="is not a sensitivity result"):
        write_report(demo["calib"], out, sensitivity=demo["compare"])
    with pytest.raises(QtoolError, match="would overwrite the input"):
        write_report(demo["calib"], demo["compare"], compare=demo["compare"])
    assert out.read_text() == "previous"


def odd_names_model() -> onnx.ModelProto:
    """A Conv whose input and output names need HTML escaping."""
    weight = np.random.default_rng(0).normal(size=(2, 1, 1, 1)).astype(np.float32)
    name = 'in<b>"&\'put'
    graph = helper.make_graph(
        [helper.make_node("Conv", [name, "w"], ["y</td>"], name="conv<i>")], "odd",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 1, 2, 2])],
        [helper.make_tensor_value_info("y</td>", TensorProto.FLOAT, ["N", 2, 2, 2])],
        [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_names_are_escaped(tmp_path):
    model_path = tmp_path / "odd.onnx"
    onnx.save_model(odd_names_model(), model_path)
    data = tmp_path / "data.npz"
    np.savez(data, **{'in<b>"&\'put': np.linspace(-1, 1, 24, dtype=np.float32).reshape(6, 1, 2, 2)})
    result = calibrate(model_path, data, CalibrateOptions(method="percentile", percentile=99.0))
    calib = tmp_path / "odd.calib.json"
    write_calibration(result.calibration, calib, result.histograms)
    out = tmp_path / "odd.html"
    write_report(calib, out, model=model_path)
    parsed = parse(out)
    assert list(parsed.tensors) == ['in<b>"&\'put']
    assert parsed.layers == ["conv<i>"]
    text = out.read_text(encoding="utf-8")
    assert "in<b>" not in text and "conv<i>" not in text
    row = parsed.tensors['in<b>"&\'put']
    assert row["chosen"] == "percentile"
    assert list(row["methods"]) == ["max", "percentile", "mse", "entropy"]


def test_calibration_without_histograms_shows_the_amax_only(demo, tmp_path):
    calib = read_calibration(demo["calib"])
    calib.histogram_file = calib.histogram_sha256 = None
    for tensor in calib.tensors.values():
        tensor.key = None
    plain = tmp_path / "plain.calib.json"
    write_calibration(calib, plain)
    out = tmp_path / "plain.html"
    result = write_report(plain, out)
    parsed = parse(out)
    assert {name: float(row["amax"]) for name, row in parsed.tensors.items()} == calib.amax
    assert all(row["images"] == [] and row["methods"] == {} for row in parsed.tensors.values())
    assert "has no histograms" in out.read_text(encoding="utf-8")
    assert result.figures == 0 and result.attention == []


def test_auto_calibration_marks_each_tensors_own_method(tmp_path):
    result = calibrate(DEMO_MODEL, DEMO_CALIB, CalibrateOptions(method="auto"))
    calib_path = tmp_path / "auto.calib.json"
    write_calibration(result.calibration, calib_path, result.histograms, result.means)
    out = tmp_path / "auto.html"
    write_report(calib_path, out)
    calib = read_calibration(calib_path)
    parsed = parse(out)
    assert parsed.tensors
    for name, row in parsed.tensors.items():
        tensor = calib.tensors[name]
        assert row["chosen"] == ("max" if tensor.rule == "bounded" else tensor.method)
        assert float(row["methods"][row["chosen"]]) == tensor.amax
    text = out.read_text(encoding="utf-8")
    assert f"<b>{calib.auto['model_method']}</b> per model (scored output SQNR: mse " in text
