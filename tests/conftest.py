import logging
import os
from pathlib import Path
from typing import NamedTuple

import pytest

from qtool.cli.main import main

REPO = Path(__file__).resolve().parent.parent
ASSETS = Path(os.environ.get("QTOOL_ASSETS", REPO.parent / "shared" / "assets"))


def pytest_collection_modifyitems(config, items):
    """Tests marked `assets` skip when ../shared/assets is absent."""
    if ASSETS.is_dir():
        return
    skip = pytest.mark.skip(reason=f"shared assets not found at {ASSETS}")
    for item in items:
        if "assets" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def default_qtool_logger():
    """A command run in-process (in a test or a module fixture) sets up the "qtool" logger for the
    terminal; every test starts from the logger as the library leaves it."""
    logger = logging.getLogger("qtool")
    logger.setLevel(logging.NOTSET)
    logger.propagate, logger.handlers[:] = True, []


@pytest.fixture
def assets_dir() -> Path:
    return ASSETS


class Result(NamedTuple):
    code: int
    out: str
    err: str


@pytest.fixture
def qtool(capsys):
    """Run `qtool ARGS...` in-process through the real entry point; returns exit code and output."""

    def run(*args) -> Result:
        capsys.readouterr()
        logger = logging.getLogger("qtool")
        saved = logger.level, logger.propagate, logger.handlers[:]
        try:
            main([str(arg) for arg in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:  # -q must not silence the log of the tests that follow
            logger.setLevel(saved[0])
            logger.propagate, logger.handlers[:] = saved[1], saved[2]
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run
