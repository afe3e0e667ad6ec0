import pytest

from tests.helpers.demo import copy_demo


@pytest.fixture
def demo_copy(tmp_path):
    """The demo model and data in a temporary folder, and a config in a subfolder beside them,
    so every path in the config is relative to the config file, not to the working directory."""
    return copy_demo(tmp_path)
