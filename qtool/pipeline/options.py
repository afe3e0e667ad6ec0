"""The pipeline's own [pipeline] table, declared once (PIPELINE)."""

from __future__ import annotations

from qtool.backends.onnxruntime.providers import AUTO as AUTO_PROVIDER
from qtool.backends.onnxruntime.providers import CHOICES as PROVIDER_CHOICES
from qtool.options import ANY, FILE, Option, OptionGroup

PIPELINE = OptionGroup("pipeline", [
    Option("model", path=FILE, command=False, help="The FP32 ONNX model (required)."),
    Option("output_dir", path=ANY, writes=True, command=False,
           help="Artifact folder (default: out/<config name> beside the config)."),
    Option("reuse_calibration", bool, True, command=False,
           help="Reuse the calibration file when model, data and options are unchanged."),
    Option("provider", default=AUTO_PROVIDER, command=False,
           help=f"onnxruntime's execution providers: {', '.join(PROVIDER_CHOICES)}."),
])
