import os
from pathlib import Path

import pytest

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


@pytest.fixture
def assets_dir() -> Path:
    return ASSETS
