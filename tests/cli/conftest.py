from dataclasses import dataclass

import pytest

from qtool.cli.main import main


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def qtool(capsys):
    """Run `qtool ARGS...` in-process through the real entry point; returns exit code and output."""

    def run(*args) -> Result:
        capsys.readouterr()
        try:
            main([str(arg) for arg in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run
