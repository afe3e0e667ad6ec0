"""The import contract of pyproject.toml's [tool.importlinter]: qtool's layers (nothing imports a
higher layer, imports inside functions included), no import cycles between packages or between
the modules of a package, and onnxruntime imported by qtool.backends.onnxruntime alone."""

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
