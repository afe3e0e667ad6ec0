"""User metrics: `--metric-script metric.py` scores the candidate against the reference with the
user's own post-processing (box F1 after a detector's decoding, text accuracy, ...).

The script is Python and runs as is, like a data loader script: it is your code, with your
permissions. It is executed once as a fresh module and defines two functions:

    update(reference, candidate)          called once per batch with two dicts, output name ->
    update(reference, candidate, inputs)  array (both models' outputs); a third parameter named
                                          `inputs` also gets the batch's feeds (input name ->
                                          array). It accumulates whatever `result` needs.
    result()                              -> dict of metric name -> number.

`result` is called once after the first batch too, so that the names to gate and the return
type are checked before the rest of the data runs: it must work after one batch and must not
change the accumulated state.
Names are letters, digits, '_', '.' and '-' (they are what --min-metric NAME=VALUE refers to).
An exception in the script becomes one error line pointing at the script's own line.
"""

from __future__ import annotations

import inspect
import numbers
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from qtool.errors import QtoolError
from qtool.io.loader_script import load_module, script_error, script_function

WHAT = "metric script"
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


class MetricScript:
    """A loaded metric script: feed it batches, read its named numbers."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        module = load_module(self.path, WHAT)
        self._update = script_function(module, self.path, "update", WHAT)
        self._result = script_function(module, self.path, "result", WHAT)
        try:
            parameters = inspect.signature(self._update).parameters
        except (TypeError, ValueError):  # a builtin without a signature: call it plainly
            parameters = {}
        self.wants_inputs = "inputs" in parameters

    def update(self, reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray],
               inputs: Mapping[str, np.ndarray], batch: int) -> None:
        args = (dict(reference), dict(candidate))
        try:
            if self.wants_inputs:
                self._update(*args, inputs=dict(inputs))
            else:
                self._update(*args)
        except (Exception, SystemExit) as exc:
            raise script_error(exc, self.path, f"calling update() on batch {batch}", WHAT) from None

    def result(self, when: str = "") -> dict[str, float]:
        """The script's named numbers, checked: a dict of valid names to real numbers. `when`
        says in an error message when it was called, if not at the end."""
        try:
            values = self._result()
        except (Exception, SystemExit) as exc:
            raise script_error(exc, self.path, f"calling result(){when}", WHAT) from None
        if not isinstance(values, Mapping):
            raise QtoolError(f"{WHAT} {self.path}: result() returned a {type(values).__name__}; "
                             f"it must return a dict of metric name -> number")
        checked = {}
        for name, value in values.items():
            if not isinstance(name, str) or not NAME.match(name):
                raise QtoolError(f"{WHAT} {self.path}: result() returned the metric name "
                                 f"{name!r}; names are letters, digits, '_', '.' and '-'")
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
                raise QtoolError(f"{WHAT} {self.path}: result() returned {name} = {value!r} "
                                 f"({type(value).__name__}); metrics must be numbers")
            checked[name] = float(value)
        return checked
