"""EfficientNet-Lite0 and ImageNet photos (../shared/assets) through the real commands: calibrate,
quantize, check, then the INT8 model run in onnxruntime against the FP32 one. Skipped without the
assets. A subset of the photos keeps it to a few seconds; the full-size measurement is
scripts/bench_accuracy.py."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest

from qtool.io.data import open_data
from qtool.io.model import input_specs, load_model
from tests.conftest import REPO

SAMPLES = 32
CONFIG = REPO / "configs" / "imagenet_classifier.toml"


def logits(model_path, images, config) -> np.ndarray:
    import onnxruntime as ort

    from qtool.config import load_config

    model = load_model(model_path)
    preprocess = load_config(config).get("preprocess", {})
    source = open_data(images, input_specs(model), preprocess=preprocess, batch_size=SAMPLES,
                       num_samples=SAMPLES)
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, feeds)[0] for feeds in source])


@pytest.mark.assets
def test_calibrate_quantize_check_run(qtool, assets_dir, tmp_path):
    model = tmp_path / "efficientnet_lite0.onnx"
    shutil.copy(assets_dir / "efficientnet_lite0.onnx", model)
    images = assets_dir / "imagenet200"
    calib = tmp_path / "c.json"

    result = qtool("calibrate", model, "--data", images, "--config", CONFIG,
                   "--num-samples", SAMPLES, "-o", calib, "-q")
    assert result.code == 0, result.err
    assert f"on {SAMPLES} samples" in result.out

    out = tmp_path / "int8.onnx"
    result = qtool("quantize", model, "--calib", calib, "-o", out, "-q")
    assert result.code == 0, result.err
    # every conv, the classifier, the pooling and the residual Adds of the 16 blocks
    assert "quantized 60 nodes: Add 9, Conv 49, Gemm 1, GlobalAveragePool 1" in result.out
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)

    result = qtool("check", out, "--strict")  # not even a warning on our own output
    assert result.code == 0, result.out
    assert "0 errors, 0 warnings" in result.out

    reference = logits(model, images, CONFIG)
    quantized = logits(out, images, CONFIG)
    sqnr = 10 * np.log10(np.sum(reference.astype(np.float64) ** 2)
                         / np.sum((quantized.astype(np.float64) - reference) ** 2))
    agreement = np.mean(quantized.argmax(1) == reference.argmax(1))
    # 23.0 dB and 100% here (32 photos); a wrong scale, axis or placement falls far below
    assert sqnr > 18, sqnr
    assert agreement >= 0.9, agreement
