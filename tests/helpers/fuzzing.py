"""The fuzzing harness of tests/unit/fuzz: hypothesis settings with a CI and a long budget
(QTOOL_FUZZ_LONG=1), byte mutations of a seed file, and the tally of outcomes per target, where
each case must succeed or end in a one-line QtoolError."""

from __future__ import annotations

import collections
import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qtool.errors import QtoolError

LONG = os.environ.get("QTOOL_FUZZ_LONG") == "1"


def fuzz_settings(ci: int, long: int):
    return settings(max_examples=long if LONG else ci, deadline=None, database=None,
                    derandomize=not LONG, suppress_health_check=list(HealthCheck))


class Tally:
    """Outcome counts per target, printed at the end of each test (pytest -s or -rA shows them)."""

    def __init__(self, name: str):
        self.name = name
        self.counts: collections.Counter = collections.Counter()

    def run(self, function, *args) -> None:
        try:
            function(*args)
        except QtoolError as exc:
            message = str(exc)
            assert message and "\n" not in message, f"error message not one line: {message!r}"
            self.counts["QtoolError"] += 1
        else:
            self.counts["ok"] += 1

    def report(self) -> str:
        total = sum(self.counts.values())
        return f"fuzz {self.name}: {total} cases, " + ", ".join(
            f"{key} {value}" for key, value in sorted(self.counts.items()))

    def fuzz_file(self, seed: bytes, path, exercise, *, ci: int = 400, long: int = 20000,
                  write=None) -> None:
        """Run exercise(path) on mutations of `seed` written to `path` (or by write(data)), then
        print the counts."""

        @fuzz_settings(ci=ci, long=long)
        @given(mutated(seed))
        def case(data):
            if write is None:
                path.write_bytes(data)
            else:
                write(data)
            self.run(exercise, path)

        case()
        print(self.report())


def mutate(seed: bytes, rng: np.random.Generator, max_edits: int = 6) -> bytes:
    """A few random edits of `seed`: set, flip, insert, delete, truncate."""
    data = bytearray(seed)
    for _ in range(int(rng.integers(1, max_edits + 1))):
        kind = rng.integers(5)
        position = int(rng.integers(max(len(data), 1)))
        if kind == 0 and data:
            data[position] = int(rng.integers(256))
        elif kind == 1 and data:
            data[position] ^= 1 << int(rng.integers(8))
        elif kind == 2:
            data[position:position] = rng.bytes(int(rng.integers(1, 13)))
        elif kind == 3:
            del data[position:position + int(rng.integers(1, 33))]
        elif kind == 4 and rng.random() < 0.3:
            del data[position:]
    return bytes(data)


def mutated(seed: bytes, max_edits: int = 6):
    """Mutations of `seed`, one per drawn integer: cheap to generate, and a failure is reported
    with the integer that reproduces it (mutate(seed, np.random.default_rng(that integer)))."""
    return st.integers(0, 2**63 - 1).map(
        lambda number: mutate(seed, np.random.default_rng(number), max_edits))
