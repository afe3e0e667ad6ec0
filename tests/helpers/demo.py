"""The repository's demo model and data copied into a test folder, and a pipeline config beside
them, so every path in the config is relative to the config file, not to the working directory."""

from __future__ import annotations

import shutil
from pathlib import Path

DEMO = Path(__file__).resolve().parents[2] / "demo"


def copy_demo(root: Path) -> Path:
    """The demo model and data under root/assets, and an empty root/configs for the config."""
    assets = root / "assets"
    (assets / "data").mkdir(parents=True)
    shutil.copy(DEMO / "digits_cnn.onnx", assets)
    for name in ("calib.npz", "test.npz", "test_labels.npy"):
        shutil.copy(DEMO / "data" / name, assets / "data")
    (root / "configs").mkdir()
    return root


def write_config(root: Path, extra_compare: str = "", extra: str = "") -> Path:
    config = root / "configs" / "ci.toml"
    config.write_text(f"""
[pipeline]
model = "../assets/digits_cnn.onnx"
output_dir = "../out"

[calibrate]
data = "../assets/data/calib.npz"
method = "percentile"

[compare]
data = "../assets/data/test.npz"
labels = "../assets/data/test_labels.npy"
batch_size = 100
max_top1_drop = 1.0
min_agreement = 98.0
{extra_compare}
{extra}
""")
    return config
