"""`qtool doctor`: which runtimes, GPUs and optional packages this machine has."""

from __future__ import annotations

import platform
import sys

import click

from qtool.cli.common import emit, json_option


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@json_option
def doctor(as_json):
    """Show Python, qtool, onnx, onnxruntime (and its providers), TensorRT, the CUDA binding,
    the GPUs and the optional report packages. Always exits 0: it only reports."""
    from qtool import __version__
    from qtool.backends import availability as av

    components = [
        av.Component("python", True, platform.python_version(), detail=sys.executable),
        av.Component("qtool", True, __version__),
        av.module_component("onnx"),
        av.module_component("numpy"),
        av.onnxruntime_component(),
        av.tensorrt_component(),
        av.cuda_binding_component(),
        av.gpu_component(),
        av.module_component("matplotlib", hint=av.REPORT_INSTALL_HINT, purpose="plots in `qtool report`"),
        _counting_loop(av.Component),
    ]
    width = max(len(c.name) for c in components)
    lines = []
    for component in components:
        if component.available:
            text = component.version or "available"
            if component.detail:
                text += f" ({component.detail})"
        else:
            text = "not available" + (f": {component.detail}" if component.detail else "")
        lines.append(f"{component.name:<{width}}  {text}")
    result = {"components": {c.name: c.to_dict() for c in components}}
    emit(result, as_json, "\n".join(lines))


def _counting_loop(component):
    from qtool.calib.binning import NOT_BUILT, compiled_kernel

    if compiled_kernel() is not None:
        return component("histogram loop", True, "compiled C")
    return component("histogram loop", False, detail=NOT_BUILT)
