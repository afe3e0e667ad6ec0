"""Which onnxruntime execution providers run calibration, compare and sensitivity.

    cpu        CPUExecutionProvider
    cuda       CUDAExecutionProvider, CPU for the ops it lacks (onnxruntime-gpu)
    tensorrt   TensorrtExecutionProvider, then CUDA, then CPU (onnxruntime-gpu with TensorRT)
    auto       cuda when onnxruntime offers it, cpu otherwise

Only where the values are computed changes: every observer (histograms, maxima, channel means)
counts the arrays it is given the same way whichever provider produced them.

A provider asked for by name must be there: a missing one, or one that fails to start a session
(CUDA or cuDNN libraries missing), is one error line. `auto` falls back to the CPU with one
warning, and every later session of the same command goes straight to the CPU.
"""

from __future__ import annotations

import logging

from qtool.errors import QtoolError, UsageError, first_line

log = logging.getLogger("qtool")

CPU, CUDA, TENSORRT, AUTO = "cpu", "cuda", "tensorrt", "auto"
CHOICES = (CPU, CUDA, TENSORRT, AUTO)
CPU_EP, CUDA_EP, TENSORRT_EP = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
# in order of precedence: onnxruntime gives each node to the first provider that can run it
_CHAINS = {CPU: (CPU_EP,), CUDA: (CUDA_EP, CPU_EP), TENSORRT: (TENSORRT_EP, CUDA_EP, CPU_EP)}
GPU_INSTALL_HINT = ("install onnxruntime-gpu in place of onnxruntime (pip uninstall onnxruntime; "
                    "pip install onnxruntime-gpu) on a machine with an NVIDIA driver")


def check_choice(choice: str) -> None:
    """A --provider value: one of CHOICES, or a UsageError."""
    if choice not in CHOICES:
        raise UsageError(f"unknown provider {choice!r}; choose one of {', '.join(CHOICES)}")


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


class Providers:
    """The providers of one command's sessions, resolved once from a --provider choice."""

    def __init__(self, choice: str = CPU, available: list[str] | None = None):
        check_choice(choice)
        available = available_providers() if available is None else list(available)
        self.choice = choice
        if choice == AUTO:
            self.names = _CHAINS[CUDA] if CUDA_EP in available else _CHAINS[CPU]
            return
        wanted = _CHAINS[choice][0]
        if wanted not in available:
            raise QtoolError(f"--provider {choice}: onnxruntime has no {wanted} (available: "
                             f"{', '.join(available) or 'none'}); {GPU_INSTALL_HINT}")
        # a chain member onnxruntime lacks is left out (onnxruntime would warn about it)
        self.names = tuple(name for name in _CHAINS[choice] if name in available or name == CPU_EP)

    @property
    def strict(self) -> bool:
        """Named by the user: a failure to start is an error, not a fallback."""
        return self.choice in (CUDA, TENSORRT)

    @property
    def on_cpu(self) -> bool:
        return self.names == (CPU_EP,)

    def describe(self) -> str:
        return "+".join(name.removesuffix("ExecutionProvider") for name in self.names)

    def failed(self, error: BaseException) -> None:
        """A session could not start on these providers: raise when they were named, otherwise
        warn once and use the CPU from now on."""
        reason = first_line(error, 300)
        if not self.strict and self.on_cpu:
            return  # another session of this command has fallen back already
        if self.strict:
            raise QtoolError(f"--provider {self.choice}: onnxruntime cannot start a session on "
                             f"{self.describe()} ({reason}); {GPU_INSTALL_HINT}")
        log.warning("onnxruntime cannot start a session on %s (%s); running on the CPU",
                    self.describe(), reason)
        self.names = _CHAINS[CPU]

    def check_session(self, session) -> None:
        """onnxruntime may start a session without a provider it was given (it warns and drops
        it): for a named provider that is an error too."""
        used = list(session.get_providers())
        if self.names[0] not in used:
            self.failed(RuntimeError(f"the session runs on {', '.join(used)} only"))

    def __repr__(self) -> str:
        return f"Providers({self.choice!r}: {self.describe()})"


def resolve(choice: str | Providers | None) -> Providers:
    """A Providers for a --provider choice (None: the CPU); a Providers is kept as it is."""
    if isinstance(choice, Providers):
        return choice
    return Providers(choice or CPU)
