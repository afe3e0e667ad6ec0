"""The check step's options, declared once (CHECK) for `qtool check` and the [check] table."""

from __future__ import annotations

from qtool.options import Option, OptionGroup

CHECK = OptionGroup("check", [
    Option("strict", bool, False, help="Warnings fail the check too (exit 1)."),
    Option("ignore", multiple=True, metavar="CODE", default=(),
           help="Leave out findings with this code (repeatable)."),
])
