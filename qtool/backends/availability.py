"""What is installed and usable: TensorRT, a CUDA binding, GPUs, onnxruntime, matplotlib.

Every probe imports its module inside the function and turns any failure into a `Component`
that says why, so `qtool doctor` can report everything and the TensorRT commands can end with
one clear line instead of an ImportError traceback.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, field

from qtool.backends.imports import import_tensorrt
from qtool.errors import MissingDependency, first_line

REPORT_INSTALL_HINT = "pip install 'qtool[report]'"


@dataclass
class Component:
    """One probed package or device: available or not, its version, and why not."""

    name: str
    available: bool
    version: str | None = None
    detail: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def installed_tensorrt_version() -> str | None:
    """The version of the TensorRT that imports here ('10.16.1.11'), or None."""
    try:
        return str(import_tensorrt().__version__)
    except (MissingDependency, AttributeError):
        return None


def tensorrt_component(start_builder: bool = True) -> Component:
    try:
        trt = import_tensorrt()
    except MissingDependency as exc:
        return Component("tensorrt", False, detail=str(exc))
    version = str(getattr(trt, "__version__", "unknown"))
    if not start_builder:
        return Component("tensorrt", True, version)
    from qtool.backends.tensorrt.logger import shared_logger

    # A Builder needs CUDA: it fails with TypeError when no GPU or driver can be used.
    # (trt.Logger would print on stdout, so a silent logger that keeps the errors is used.)
    logger = shared_logger(trt, None)
    try:
        builder = trt.Builder(logger)
        del builder
    except Exception as exc:
        reason = logger.last_error() or first_line(exc)
        return Component(
            "tensorrt", False, version,
            detail=f"TensorRT {version} is installed but cannot start CUDA ({reason})",
        )
    return Component("tensorrt", True, version)


def cuda_binding_component() -> Component:
    """Which CUDA Python binding `qtool run` would use: the first that imports and starts CUDA,
    with the ones tried before it and why they were passed over."""
    from qtool.backends.tensorrt.cuda import load_cuda_binding

    try:
        binding = load_cuda_binding(init=True)
    except MissingDependency as exc:
        return Component("cuda binding", False, detail=str(exc))
    try:
        detail = binding.name + (f"; passed over: {'; '.join(binding.tried)}" if binding.tried else "")
        return Component("cuda binding", True, binding.version, detail=detail,
                         extra={"tried": list(binding.tried)})
    finally:
        binding.close()


def gpu_component() -> Component:
    """The driver and the devices it sees, through whichever CUDA binding is installed."""
    from qtool.backends.tensorrt.cuda import load_cuda_binding

    try:
        binding = load_cuda_binding(init=False)
    except MissingDependency:
        return Component("gpu", False, detail="unknown: querying GPUs needs a CUDA binding (above)")
    try:
        driver, devices = binding.describe_devices()
    except Exception as exc:
        return Component("gpu", False, detail=f"no usable GPU ({first_line(exc)})")
    if not devices:
        return Component("gpu", False, driver, detail="the CUDA driver reports no device")
    text = "; ".join(
        f"{d['index']}: {d['name']} (compute {d['compute_capability']}, "
        f"{d['memory_mib']} MiB)" for d in devices
    )
    return Component("gpu", True, driver, detail=text, extra={"devices": devices})


def onnxruntime_component() -> Component:
    from qtool.backends.onnxruntime.installed import import_onnxruntime

    try:
        ort = import_onnxruntime()
    except Exception as exc:
        return Component("onnxruntime", False, detail=first_line(exc))
    from qtool.backends.onnxruntime.providers import Providers

    providers = list(ort.get_available_providers())
    auto = Providers("auto", providers).describe()
    return Component(
        "onnxruntime", True, ort.__version__,
        detail="providers: " + ", ".join(providers) + f"; --provider auto runs on {auto}",
        extra={"providers": providers, "auto": auto},
    )


def module_component(name: str, hint: str = "", purpose: str = "") -> Component:
    try:
        module = importlib.import_module(name)
    except Exception as exc:
        detail = first_line(exc) + (f"; {hint}" if hint else "")
        return Component(name, False, detail=detail)
    return Component(name, True, str(getattr(module, "__version__", "unknown")), detail=purpose)
