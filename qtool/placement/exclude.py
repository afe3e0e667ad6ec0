"""Node exclusion by name: plain names or regular expressions, and exclude files.

A pattern excludes a node when it equals the node's name or `re.fullmatch`es it, so names full of
regex metacharacters ('/blocks.0/conv[1]') still work verbatim. A pattern that is not a valid
regular expression is used as a plain name only.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from qtool.errors import QtoolError


class NameMatcher:
    """Matches node names against exclude patterns and remembers which patterns matched."""

    def __init__(self, patterns) -> None:
        self.patterns = list(dict.fromkeys(patterns))
        self._compiled = []
        for pattern in self.patterns:
            try:
                self._compiled.append((pattern, re.compile(pattern)))
            except re.error:
                self._compiled.append((pattern, None))
        self._used: set[str] = set()

    def match(self, name: str) -> str | None:
        """The first pattern matching `name`, or None."""
        for pattern, regex in self._compiled:
            if name == pattern or (regex is not None and regex.fullmatch(name)):
                self._used.add(pattern)
                return pattern
        return None

    def unmatched(self) -> list[str]:
        """Patterns that matched no name so far (likely typos or a different model)."""
        return [pattern for pattern in self.patterns if pattern not in self._used]


def read_exclude_file(path: str | os.PathLike) -> list[str]:
    """One name or regex per line; blank lines and '#' comments (whole line or after a space)."""
    path = Path(path)
    if not path.is_file():
        raise QtoolError(f"exclude file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise QtoolError(f"exclude file {path} is not UTF-8 text") from None
    patterns = []
    for line in text.splitlines():
        line = re.split(r"(?:^|\s)#", line, maxsplit=1)[0].strip()
        if line:
            patterns.append(line)
    return patterns
