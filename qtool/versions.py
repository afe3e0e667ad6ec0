"""Tool versions recorded in every output file, for reproducibility."""

from __future__ import annotations

import platform
from importlib import metadata

from qtool import __version__

_PACKAGES = ("onnx", "onnxruntime", "numpy", "click")


def tool_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    versions = {"qtool": __version__, "python": platform.python_version()}
    for name in _PACKAGES + tuple(extra):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
