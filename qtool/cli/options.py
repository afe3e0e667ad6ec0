"""Click options from option declarations (qtool.options): a step's flags are generated from its
group, so a flag and its TOML key cannot drift apart."""

from __future__ import annotations

import click

from qtool.options import FILE, Option, OptionGroup


def click_option(option: Option):
    """The click.option decorator of one declaration."""
    kwargs = {"default": option.default, "help": option.help}
    flag = option.long_flag
    if option.type is bool and option.default:
        flag = f"{flag}/--no-{flag[2:]}"
        kwargs["show_default"] = True
    elif option.type is bool:
        kwargs["is_flag"] = True
    else:
        kwargs["type"] = _click_type(option)
        kwargs["multiple"] = option.multiple
        kwargs["metavar"] = option.metavar
        # shown when there is a value to show; a repeatable option's help says its own default
        kwargs["show_default"] = option.default is not None and not option.multiple
    return click.option(flag, option.name, **kwargs)


def _click_type(option: Option):
    if option.choices is not None:
        return click.Choice(list(option.choices))
    if option.path is not None:
        return click.Path(dir_okay=option.path != FILE)
    if option.minimum is not None or option.maximum is not None:
        return click.IntRange(option.minimum, option.maximum)
    return option.type


def click_options(group: OptionGroup | list[Option]):
    """A decorator adding the command options of `group`, in declared order."""
    options = group.command_options() if isinstance(group, OptionGroup) else list(group)

    def decorate(func):
        for option in reversed(options):
            func = click_option(option)(func)
        return func

    return decorate
