"""The fuzz tests' scratch folder, one per test module."""

import os
import tempfile
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def scratch():
    # Thousands of small files are written: in memory where the system offers it (a disk-backed
    # /tmp can take a millisecond per write).
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="qtool-fuzz-", dir=shm) as folder:
        yield Path(folder)
