"""The onnxruntime.quantization anchor of the accuracy matrix, and stacking a calibration split
into one .npz for ModelOpt."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from matrix_inputs import read_split


def ort_quantize(model: str, data: str, output: str, method: str, all_ops: bool = False) -> dict:
    """onnxruntime.quantization's careful configuration: quant_pre_process, opset >= 13, QDQ,
    only Conv/ConvTranspose/Gemm/MatMul (every op type it supports with all_ops), per-channel,
    symmetric QInt8 activations and weights."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    notes = []
    work = Path(output).with_suffix(".work")
    work.mkdir(parents=True, exist_ok=True)
    prepped, upgraded = _prepared(model, work, notes)

    samples = read_split(Path(data))
    names = [i.name for i in onnx.load(str(prepped), load_external_data=False).graph.input]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(samples)

        def get_next(self):
            sample = next(self._it, None)
            return None if sample is None else {n: sample[n] for n in names if n in sample}

    def run(source: Path) -> None:
        quantize_static(str(source), output, Reader(), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=None if all_ops else ["Conv", "ConvTranspose",
                                                                    "Gemm", "MatMul"],
                        per_channel=True, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8,
                        calibrate_method=getattr(CalibrationMethod, method),
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})

    try:
        run(prepped)
    except Exception as error:
        if prepped == upgraded:
            raise
        # some pre-processed graphs trip quantize_static itself: the plain model may not
        notes.append(f"quantize_static failed after quant_pre_process ({type(error).__name__}); "
                     f"quantized without it")
        run(upgraded)
    shutil.rmtree(work, ignore_errors=True)
    return {"notes": notes}


def _prepared(model: str, work: Path, notes: list) -> tuple[Path, Path]:
    """The model at opset 13 or later, and that model through quant_pre_process (the same
    file when pre-processing fails); what was done goes into notes."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source = onnx.load(model)
    opset = next(o.version for o in source.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 13:
        from onnx import version_converter

        source = version_converter.convert_version(source, 13)
        notes.append(f"opset {opset} -> 13")
    upgraded = work / "opset.onnx"
    onnx.save_model(source, str(upgraded))
    prepped = work / "pre.onnx"
    try:
        quant_pre_process(str(upgraded), str(prepped))
    except ImportError:
        # symbolic shape inference needs sympy, which qtool's venv does not carry
        quant_pre_process(str(upgraded), str(prepped), skip_symbolic_shape=True)
        notes.append("quant_pre_process without symbolic shape inference (no sympy)")
    except Exception as error:  # keep going without it, and say so
        notes.append(f"quant_pre_process failed ({type(error).__name__}); skipped")
        prepped = upgraded
    return prepped, upgraded


def stack_calibration(data: Path, output: Path) -> dict:
    """All calibration samples of a folder in one .npz (ModelOpt's --calibration_data)."""
    samples = read_split(data)
    stacked = {}
    for name in samples[0]:
        arrays = [s[name] for s in samples]
        if len({a.shape for a in arrays}) != 1:
            raise ValueError(f"input {name}: samples differ in shape, cannot stack")
        # join along each input's batch axis: the first of size 1 (Silero's state: axis 1)
        ones = [axis for axis, size in enumerate(arrays[0].shape) if size == 1]
        stacked[name] = np.concatenate(arrays, axis=ones[0] if ones else 0) \
            if arrays[0].ndim else arrays[0]
    np.savez(output, **stacked)
    return {name: list(a.shape) for name, a in stacked.items()}
