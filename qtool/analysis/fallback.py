"""Automatic fallback: the fewest layers to keep in high precision so the quantized model meets a
target, and the exclusion file `qtool quantize --exclude-file` reads.

The search only needs the ranking (most sensitive first) and a check that builds the whole model
with a set of layers excluded and says whether it meets the target:

1. nothing excluded: done if it passes;
2. grow: exclude the top 1, 2, 4, 8, ... ranked layers until the model passes;
3. bisect between the last failing and the first passing prefix for the shortest passing prefix;
4. prune: put excluded layers back (quantize them again), least sensitive first, in groups: a
   group whose return keeps the model passing stays quantized, a failing group is split in
   halves and each half tried; a layer is kept in high precision only when putting it back
   alone fails. A sensitivity ranking is only a guide (layer errors do not add up exactly), and
   the shortest passing prefix often holds layers that are not needed.

Every decision comes from a check of the whole model. With p layers in the passing prefix and k
in the answer the search costs about 2 log2(p) + 1 checks plus, for the prune, between 1 and
about 2 k log2(p / k) + 1; a set already checked is never checked again.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from qtool.errors import QtoolError
from qtool.io.atomic import write_text


@dataclass
class Step:
    phase: str                     # baseline | grow | bisect | prune | final
    excluded: tuple[str, ...]
    passed: bool
    metrics: dict

    def to_dict(self) -> dict:
        return {"phase": self.phase, "excluded": len(self.excluded), "passed": self.passed,
                **self.metrics}


@dataclass
class FallbackResult:
    excluded: list[str]
    passed: bool
    steps: list[Step] = field(default_factory=list)
    checks: int = 0                # distinct sets checked

    @property
    def final(self) -> Step:
        """The check of the returned set."""
        wanted = tuple(self.excluded)
        return next(step for step in reversed(self.steps) if step.excluded == wanted)

    def to_dict(self) -> dict:
        return {"excluded": list(self.excluded), "passed": self.passed,
                "checks": self.checks, "final": self.final.to_dict(),
                "steps": [step.to_dict() for step in self.steps]}


Check = Callable[[tuple[str, ...]], tuple[bool, dict]]


def search_fallback(ranking: Sequence[str], check: Check,
                    on_step: Callable[[Step], None] | None = None) -> FallbackResult:
    """The smallest set of layers (in ranking order) whose exclusion makes `check` pass."""
    steps: list[Step] = []
    seen: dict[frozenset, tuple[bool, dict]] = {}
    ranking = list(ranking)

    def run(phase: str, excluded: Iterable[str]) -> bool:
        excluded = tuple(name for name in ranking if name in set(excluded))
        key = frozenset(excluded)
        if key in seen and phase != "final":
            return seen[key][0]  # known: no new step
        if key not in seen:
            seen[key] = check(excluded)
        passed, metrics = seen[key]
        step = Step(phase, excluded, passed, metrics)
        steps.append(step)
        if on_step is not None:
            on_step(step)
        return passed

    if run("baseline", ()):
        return FallbackResult([], True, steps, checks=len(seen))
    low, high = 0, None  # prefix lengths: low fails, high passes
    size = 1
    while high is None:
        size = min(size, len(ranking))
        if run("grow", ranking[:size]):
            high = size
        elif size == len(ranking):
            return FallbackResult(list(ranking), False, steps, checks=len(seen))
        else:
            low, size = size, size * 2
    while high - low > 1:
        middle = (low + high) // 2
        if run("bisect", ranking[:middle]):
            high = middle
        else:
            low = middle
    chosen = list(ranking[:high])

    def put_back(group: list[str]) -> None:
        nonlocal chosen
        trial = [name for name in chosen if name not in group]
        if run("prune", trial):
            chosen = trial
        elif len(group) > 1:
            half = len(group) // 2
            put_back(group[:half])
            put_back(group[half:])

    if len(chosen) > 1:
        put_back(list(reversed(chosen)))  # least sensitive first
    if steps[-1].excluded != tuple(chosen):
        run("final", chosen)
    return FallbackResult(chosen, True, steps, checks=len(seen))


def exclusion_pattern(name: str, all_names: Iterable[str]) -> str:
    """How to write `name` so that the exclude reader matches it and nothing else.

    The reader takes a line as a plain name or a regular expression (full match), so a name like
    '/blocks.1/conv' would also exclude '/blocks11/conv'; such names, and names the line syntax
    would mangle ('#', surrounding spaces), are written escaped.
    """
    if "#" in name or name != name.strip():
        return re.escape(name)
    try:
        regex = re.compile(name)
    except re.error:
        return name
    if any(other != name and regex.fullmatch(other) for other in all_names):
        return re.escape(name)
    return name


def write_exclude_file(path, excluded: Sequence[str], all_names: Iterable[str],
                       header: Sequence[str] = ()) -> None:
    """One node per line with '#' comment lines first; written atomically."""
    all_names = list(all_names)
    for line in header:
        if "\n" in line:
            raise QtoolError("exclude file comments must be single lines")
    lines = [f"# {line}" for line in header]
    lines += [exclusion_pattern(name, all_names) for name in excluded]
    write_text(path, "\n".join(lines) + "\n")
