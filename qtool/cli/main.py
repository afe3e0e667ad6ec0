"""The `qtool` command group. Subcommands are imported only when invoked, so `--help`
and every command work with only the core dependencies installed."""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading

import click

from qtool import __version__
from qtool.errors import Interrupted, QtoolError

# command name -> "module:attribute"; each module holds one thin click command.
COMMANDS = {
    "calibrate": ("qtool.cli.calibrate:calibrate", "Collect activation histograms and pick thresholds."),
    "merge-calib": ("qtool.cli.merge_calib:merge_calib", "Merge calibration shards exactly."),
    "quantize": ("qtool.cli.quantize:quantize", "Insert Q/DQ nodes for TensorRT (INT8)."),
    "check": ("qtool.cli.check:check", "Lint a Q/DQ model against TensorRT's rules."),
    "build": ("qtool.cli.build:build", "Build a TensorRT engine from an ONNX model."),
    "run": ("qtool.cli.run:run", "Run a TensorRT engine on data, write outputs."),
    "doctor": ("qtool.cli.doctor:doctor", "Show which runtimes, GPUs and packages are available."),
    "compare": ("qtool.cli.compare:compare", "Compare two models' outputs; an accuracy gate."),
    "sensitivity": ("qtool.cli.sensitivity:sensitivity", "Rank layers by quantization sensitivity."),
    "report": ("qtool.cli.report:report", "Write an HTML report of a calibration."),
    "pipeline": ("qtool.cli.pipeline:pipeline", "Calibrate, quantize, check, compare (and build) from one config."),
}

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module_name, attr = COMMANDS[name][0].split(":")
        return getattr(importlib.import_module(module_name), attr)

    def format_commands(self, ctx, formatter):
        # Short help from the table, so `qtool --help` imports no command module.
        rows = [(name, help_text) for name, (_, help_text) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "--version", prog_name="qtool")
def cli():
    """qtool: post-training INT8 quantization of ONNX models for TensorRT.

    \b
    Typical flow:
      qtool calibrate model.onnx --data calib/
      qtool quantize model.onnx --calib model.calib.json -o model.int8.onnx
      qtool compare model.onnx model.int8.onnx --data val/ --task classification
      qtool build model.int8.onnx --int8 -o model.engine
    """


def _interrupt(signum, frame):
    raise Interrupted(128 + signum)


def _install_signal_handlers() -> dict:
    """Ctrl-C and SIGTERM raise Interrupted in the main thread; returns the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, _interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}


def main(argv=None) -> None:
    """Console entry point: user errors become one line on stderr and an exit status."""
    previous = _install_signal_handlers()
    try:
        _run(argv)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _exit_now(code: int) -> None:
    """Exit after Ctrl-C or SIGTERM even when a worker thread is still blocked in a read (a hung
    file system): the interpreter would otherwise wait for it at exit, for ever."""
    workers = [thread for thread in threading.enumerate()
               if thread is not threading.main_thread() and thread.is_alive() and not thread.daemon]
    if workers:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _run(argv) -> None:
    try:
        status = cli.main(args=argv, prog_name="qtool", standalone_mode=False)
    except Interrupted as exc:
        click.echo(exc.signal_name, err=True)
        _exit_now(exc.code)
    except QtoolError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    # click returns the exit code of `ctx.exit(n)` / --help; commands themselves return None.
    sys.exit(status if isinstance(status, int) else 0)


if __name__ == "__main__":
    main()
