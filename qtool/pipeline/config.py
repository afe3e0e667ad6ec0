"""Reading a pipeline config: its tables checked against the steps' option groups, and the
values of each step's table with their defaults and their paths resolved."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from qtool.analysis.compare_options import COMPARE
from qtool.backends.tensorrt.build_options import BUILD
from qtool.calib.options import CALIBRATE
from qtool.config import load_config
from qtool.errors import UsageError
from qtool.options import OptionGroup, resolve_path
from qtool.pipeline.options import PIPELINE
from qtool.quantize.check.options import CHECK
from qtool.quantize.options import QUANTIZE

GROUPS: dict[str, OptionGroup] = {group.table: group for group in
                                  (PIPELINE, CALIBRATE, QUANTIZE, CHECK, COMPARE, BUILD)}
FREE_TABLES = ("preprocess", "inputs", "sensitivity", "limits")  # checked by their own readers


def check_tables(config: dict, path) -> None:
    """Unknown tables and keys, and values of the wrong type, are usage errors."""
    for name, table in config.items():
        if name in FREE_TABLES:
            if not isinstance(table, dict):
                raise UsageError(f"[{name}] in {path} must be a table")
            continue
        if name not in GROUPS:
            known = ", ".join(f"[{t}]" for t in list(GROUPS) + list(FREE_TABLES))
            raise UsageError(f"unknown table [{name}] in {path} (known: {known})")
        if not isinstance(table, dict):
            raise UsageError(f"[{name}] in {path} must be a table")
        GROUPS[name].check_table(table, path)


@dataclass
class PipelineConfig:
    """A checked pipeline config. Relative paths resolve against the config file's folder."""

    path: Path
    tables: dict

    @property
    def base(self) -> Path:
        return self.path.resolve().parent

    def table(self, name: str) -> dict:
        return self.tables.get(name, {})

    def path_of(self, table: str, key: str) -> Path | None:
        """A config value that names a file, resolved (None when not set)."""
        return resolve_path(self.table(table).get(key), self.base)

    def values(self, name: str, overrides: dict | None = None, resolve: bool = True) -> dict:
        """Every option of step `name`: the table's value or its default (`overrides` replace
        defaults), paths resolved unless `resolve` is false."""
        group = GROUPS[name]
        values = group.values(self.table(name), overrides)
        for key in group.path_keys() if resolve else ():
            values[key] = self.path_of(name, key)
        return values

    def read_paths(self) -> list[Path | None]:
        """Every file or folder the config names that the run only reads."""
        return [self.path_of(name, key) for name, group in GROUPS.items()
                for key in group.path_keys() if not group[key].writes]


def read_config(path: str | os.PathLike) -> PipelineConfig:
    from qtool import limits

    path = Path(path)
    tables = load_config(path)
    check_tables(tables, path)
    limits.configure(tables.get("limits"))
    return PipelineConfig(path, tables)
