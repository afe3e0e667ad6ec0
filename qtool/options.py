"""Option declarations: each option of a step is declared once, as data.

A step's `OptionGroup` lists its `Option`s: name (the TOML key and the flag's parameter), type,
default, help text and how the flag looks. From the group come the command's click options
(qtool.cli.options turns declarations into decorators; this module imports no click, so the
library layers stay free of it), the validation of the step's TOML table in a pipeline config,
and the values an options object is built from, defaults included.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qtool.errors import UsageError

FILE, ANY = "file", "any"  # what a path option names: a file, or a file or a folder


@dataclass(frozen=True)
class Option:
    """One option of a step.

    name: the TOML key, the flag's parameter name and (unless `field` says otherwise) the field
        of the step's options object.
    type: str, int, float or bool (a float key in TOML also takes an integer).
    multiple: a repeatable flag; a string or a list of strings in TOML.
    path: FILE or ANY when the value names a file (or a folder): click.Path on the command line,
        resolved against the config file's folder in the pipeline.
    writes: a path the step writes as well as reads (kept out of the pipeline's output guard).
    flag: the long flag (default: "--" + name with '-' for '_').
    command, pipeline: whether the command has the flag, and whether the pipeline's table takes
        the key (the command's --config table takes every flag of the command).
    """

    name: str
    type: type = str
    default: Any = None
    help: str = ""
    multiple: bool = False
    choices: tuple | None = None
    path: str | None = None
    writes: bool = False
    minimum: int | None = None
    maximum: int | None = None
    metavar: str | None = None
    flag: str | None = None
    field: str | None = None
    command: bool = True
    pipeline: bool = True

    @property
    def long_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def attribute(self) -> str:
        """The options object's field this option fills."""
        return self.field or self.name

    @property
    def toml_types(self) -> tuple:
        """The Python types a TOML value of this option may have."""
        if self.multiple:
            return (str, list)
        if self.type is float:
            return (int, float)
        return (self.type,)

    def from_toml(self, value):
        """A TOML value as the options object takes it (numbers declared float become floats)."""
        if self.type is float and value is not None and not self.multiple:
            return float(value)
        return value


class OptionGroup:
    """The options of one step, in the order the command's --help lists them."""

    def __init__(self, table: str, options: list[Option]):
        self.table = table
        self.options = {option.name: option for option in options}
        if len(self.options) != len(options):
            raise ValueError(f"an option of [{table}] is declared twice")

    def __iter__(self) -> Iterator[Option]:
        return iter(self.options.values())

    def __getitem__(self, name: str) -> Option:
        return self.options[name]

    def default(self, name: str):
        return self.options[name].default

    def command_options(self) -> list[Option]:
        return [option for option in self if option.command]

    def toml_keys(self) -> list[str]:
        """The keys the pipeline's table takes."""
        return [option.name for option in self if option.pipeline]

    def check_table(self, table: dict, path) -> None:
        """Unknown keys, and values of the wrong type, are usage errors (one line each)."""
        keys = self.toml_keys()
        for key, value in table.items():
            if key not in keys:
                raise UsageError(f"unknown key {key!r} in [{self.table}] of {path} "
                                 f"(known: {', '.join(keys)})")
            types = self.options[key].toml_types
            ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
            if isinstance(value, list):
                ok = ok and all(isinstance(item, str) for item in value)
            if not ok:
                raise UsageError(f"[{self.table}] {key} in {path} must be {type_names(types)}, "
                                 f"not {value!r}")

    def values(self, table: Mapping, overrides: Mapping | None = None) -> dict:
        """Every pipeline option's value from a checked TOML table, else its default (or the
        caller's `overrides` of defaults), keyed by option name."""
        overrides = overrides or {}
        return {option.name: option.from_toml(table.get(option.name,
                                                       overrides.get(option.name, option.default)))
                for option in self if option.pipeline}

    def fields(self, values: Mapping) -> dict:
        """`values` (keyed by option name) keyed by the options object's fields, for the options
        this group declares."""
        return {option.attribute: values[option.name] for option in self if option.name in values}

    def path_keys(self) -> list[str]:
        return [option.name for option in self if option.path and option.pipeline]


def require_positive(options, names: tuple[str, ...]) -> None:
    """Each of these fields of an options object, when set, must be at least 1 (sample counts and
    batch sizes); the message names its flag."""
    for name in names:
        value = getattr(options, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer")


def type_names(types: tuple) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
             list: "a list"}
    return " or ".join(names[t] for t in types if not (t is int and float in types))


def as_list(value) -> list:
    """A TOML value that may be one string or a list of them, as a list."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def resolve_path(value, base: Path) -> Path | None:
    """A path from a config file: '~' expanded, relative paths against the config's folder."""
    if value is None:
        return None
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else Path(os.path.normpath(base / path))


def data_options() -> list[Option]:
    """--data, --data-loader-script, --num-samples, --batch-size: every step that reads data."""
    return [
        Option("data", path=ANY,
               help=".npy/.npz file or folder, or a folder of images ([preprocess] in --config)."),
        Option("loader_script", path=FILE, flag="--data-loader-script",
               help="Python file whose load_data() yields feed dicts (runs your code)."),
        Option("num_samples", int, help="Use at most this many samples."),
        Option("batch_size", int,
               help="Join and cut the samples into batches of this size (default: one batch per "
                    "file or loader item, files cut into batches of 8)."),
    ]
