"""The import contract of pyproject.toml's [tool.importlinter]: qtool's layers (nothing imports a
higher layer, imports inside functions included), no import cycles between packages or between
the modules of a package, and onnxruntime imported by qtool.backends.onnxruntime alone."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_the_import_contract_is_kept(capsys):
    # importing the command line configures import-linter's readers, as `lint-imports` does
    pytest.importorskip("importlinter.cli", reason="import-linter comes with qtool's dev extra")
    from importlinter.application import use_cases

    kept = use_cases.lint_imports(config_filename=str(PYPROJECT), cache_dir=None, no_logo=True)
    report = capsys.readouterr().out
    if not kept:
        pytest.fail(f"the import contract is broken:\n{report}", pytrace=False)


def test_a_lazy_upward_import_breaks_it(tmp_path):
    """The contract sees imports inside functions: io importing the command line, lazily, in a
    copy of qtool, fails it."""
    pytest.importorskip("importlinter.cli", reason="import-linter comes with qtool's dev extra")
    shutil.copytree(PYPROJECT.parent / "qtool", tmp_path / "qtool",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    shutil.copy(PYPROJECT, tmp_path / "pyproject.toml")
    with open(tmp_path / "qtool" / "io" / "hashing.py", "a") as module:
        module.write("\n\ndef _upward():\n    from qtool.cli.main import main\n\n    return main\n")
    script = ("import sys, importlinter.cli\n"
              "from importlinter.application import use_cases\n"
              "sys.exit(0 if use_cases.lint_imports(config_filename='pyproject.toml', "
              "cache_dir=None, no_logo=True) else 1)\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, check=False,
                            env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "qtool.io.hashing -> qtool.cli.main" in result.stdout
