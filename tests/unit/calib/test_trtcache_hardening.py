"""TensorRT caches from untrusted hands, and names the format cannot carry: refused on writing
and on reading; duplicates and header-only caches refused. (Unknown names are summarised by
`qtool calibrate --from-trt-cache`, in tests/cli/test_calibrate_cli.py.)"""

from __future__ import annotations

import pytest

from qtool.calib.trtcache import format_cache, read_cache
from qtool.errors import QtoolError

HEADER = "TRT-100300-EntropyCalibration2"
BREAKS = ["\n", "\r", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029", "\x00"]


@pytest.mark.parametrize("char", BREAKS, ids=[f"U+{ord(c):04X}" for c in BREAKS])
def test_names_the_cache_cannot_carry_are_refused_when_writing(char):
    with pytest.raises(QtoolError, match="cannot be stored in a TensorRT cache"):
        format_cache({f"a{char}b": 1.0})


@pytest.mark.parametrize("char", [c for c in BREAKS if c != "\n"],
                         ids=[f"U+{ord(c):04X}" for c in BREAKS if c != "\n"])
def test_names_the_cache_cannot_carry_are_refused_when_reading(tmp_path, char):
    path = tmp_path / "c.cache"
    path.write_text(f"{HEADER}\na{char}b: 3f800000\n", encoding="utf-8", newline="")
    with pytest.raises(QtoolError) as info:
        read_cache(path)
    assert str(info.value).startswith(f"{path}:2: ")
    assert "\x00" not in str(info.value) and char not in str(info.value)  # shown escaped


def test_every_name_the_format_can_carry_round_trips(tmp_path):
    names = ["a", "a: 3f800000", "/blocks.0/conv/Conv_output_0", "ünï cødé", "x:y", "tab\there"]
    path = tmp_path / "c.cache"
    path.write_text(format_cache(dict.fromkeys(names, 127.0)), encoding="utf-8")
    assert list(read_cache(path)[1]) == names


def test_duplicates_and_header_only_caches_are_refused(tmp_path):
    path = tmp_path / "c.cache"
    path.write_text(f"{HEADER}\nx: 3f800000\nx: 40000000\n")
    with pytest.raises(QtoolError, match=r"c.cache:3: tensor 'x' appears twice"):
        read_cache(path)
    path.write_text(f"{HEADER}\n")
    with pytest.raises(QtoolError, match="holds no tensor scales"):
        read_cache(path)


