"""Exclude patterns: plain names and regular expressions, and exclude files."""

from __future__ import annotations

import pytest

from qtool.errors import QtoolError
from qtool.placement.exclude import NameMatcher, read_exclude_file


def test_name_matcher_plain_names_regexes_and_invalid_patterns():
    matcher = NameMatcher(["/blocks.0/conv[1]", "head/.*", "bad[regex", "never"])
    assert matcher.match("/blocks.0/conv[1]") == "/blocks.0/conv[1]"  # equality, though also a regex
    assert matcher.match("head/fc") == "head/.*"
    assert matcher.match("the_head/fc") is None  # full match only
    assert matcher.match("bad[regex") == "bad[regex"
    assert matcher.match("other") is None
    assert matcher.unmatched() == ["never"]


def test_read_exclude_file(tmp_path):
    path = tmp_path / "exclude.txt"
    path.write_text("# layers to keep in FP32\n\n/stem/conv\n  head/.*   # sensitive\nconv#3\n")
    assert read_exclude_file(path) == ["/stem/conv", "head/.*", "conv#3"]
    with pytest.raises(QtoolError, match="exclude file not found"):
        read_exclude_file(tmp_path / "missing.txt")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(QtoolError, match="not UTF-8"):
        read_exclude_file(tmp_path / "binary.txt")
