"""Data loader scripts: the one explicit way to run user code for data.

`--data-loader-script load.py` (or `load.py:my_function`) names a Python file whose function
(default `load_data`) takes no arguments and returns an iterable of feed dicts, input name ->
array. A one-shot result (a generator) is replaced by calling the function again whenever the
data is read from the start; a list or other re-iterable result is reused. An exception in
the script becomes one error line pointing at the script's own line; the full traceback is logged
at debug level (-vv).
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from qtool.errors import Interrupted, QtoolError

log = logging.getLogger(__name__)

DEFAULT_FUNCTION = "load_data"
_counter = itertools.count()


def split_spec(spec: str) -> tuple[Path, str]:
    """'path.py:func' -> (path, func); a bare path uses load_data. Drive letters are not split."""
    head, sep, tail = str(spec).rpartition(":")
    if sep and head and tail.isidentifier():
        return Path(head), tail
    return Path(spec), DEFAULT_FUNCTION


def _where_in_script(exc: BaseException, script: Path) -> str:
    """'script.py:12' for the innermost frame of the exception inside the script, if any."""
    frames = traceback.extract_tb(exc.__traceback__)
    target = str(script.resolve())
    for frame in reversed(frames):
        try:
            if str(Path(frame.filename).resolve()) == target:
                return f" at {script}:{frame.lineno}"
        except OSError:
            continue
    return ""


def script_error(exc: BaseException, script: Path, doing: str,
                 what: str = "loader script") -> QtoolError:
    if isinstance(exc, Interrupted):
        raise exc  # Ctrl-C or SIGTERM while the script ran is not the script's failure
    log.debug("traceback of the %s error:\n%s", what,
              "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    detail = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return QtoolError(f"{what} {script} failed while {doing}{_where_in_script(exc, script)}: "
                      f"{detail} (run with -vv for the traceback)")


def load_module(path: Path, what: str = "loader script"):
    """Execute a Python file as a fresh module (its own globals on every call)."""
    if not path.is_file():
        raise QtoolError(f"{what} not found: {path}")
    module_name = f"qtool_script_{next(_counter)}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise QtoolError(f"cannot load {path} as a Python script")
    module = importlib.util.module_from_spec(module_spec)
    # The script may import modules that sit beside it.
    sys.path.insert(0, str(path.resolve().parent))
    try:
        module_spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        raise script_error(exc, path, "running its top level", what) from None
    finally:
        sys.path.remove(str(path.resolve().parent))
    return module


def script_function(module, path: Path, name: str, what: str = "loader script") -> Callable:
    """The script's function `name`, or one error line saying it is missing or not a function."""
    function = getattr(module, name, None)
    if function is None:
        raise QtoolError(f"{what} {path} defines no function {name}()")
    if not callable(function):
        raise QtoolError(f"{what} {path}: {name} is a {type(function).__name__}, not a function")
    return function


def load_function(spec: str) -> tuple[Path, str, Callable[[], Iterable]]:
    """Execute the script as a fresh module and return (path, function name, function)."""
    path, name = split_spec(spec)
    return path, name, script_function(load_module(path), path, name)


def call_loader(function: Callable[[], Iterable], script: Path, name: str) -> Iterable:
    try:
        result = function()
    except (Exception, SystemExit) as exc:
        raise script_error(exc, script, f"calling {name}()") from None
    if isinstance(result, (dict, str, bytes)) or not hasattr(result, "__iter__"):
        raise QtoolError(f"loader script {script}: {name}() returned a {type(result).__name__}; "
                         f"it must return an iterable (list or generator) of dicts of "
                         f"input name -> array")
    return result


def guarded(items: Iterable, script: Path, name: str) -> Iterator:
    """Iterate the loader's result, turning its exceptions into one-line errors."""
    iterator = iter(items)
    index = 0
    while True:
        try:
            item = next(iterator)
        except StopIteration:
            return
        except (Exception, SystemExit) as exc:
            raise script_error(exc, script, f"producing item {index} of {name}()") from None
        yield item
        index += 1
