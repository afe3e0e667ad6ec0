"""The pipeline's own [pipeline] table, declared once (PIPELINE)."""

from __future__ import annotations

from qtool.options import FILE, Option, OptionGroup

PIPELINE = OptionGroup("pipeline", [
    Option("model", path=FILE, command=False, help="The FP32 ONNX model (required)."),
    Option("output_dir", path=FILE, writes=True, command=False,
           help="Artifact folder (default: out/<config name> beside the config)."),
    Option("reuse_calibration", bool, True, command=False,
           help="Reuse the calibration file when model, data and options are unchanged."),
    Option("provider", default="auto", command=False,
           help="onnxruntime's execution providers: cpu, cuda, tensorrt, auto."),
])
