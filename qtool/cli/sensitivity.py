"""`qtool sensitivity`: rank the quantized layers by what quantizing each alone costs, and with a
target find the fewest layers to keep in high precision (an exclusion file for `qtool quantize`)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from qtool.calib.choices import TASKS
from qtool.cli.common import (
    apply_config,
    config_option,
    data_options,
    emit,
    json_option,
    log,
    provider_option,
    require_data,
    setup_logging,
    verbosity_options,
)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--calib", type=click.Path(dir_okay=False), default=None,
              help="Calibration file of MODEL (required).")
@data_options
@click.option("--labels", type=click.Path(dir_okay=False), default=None,
              help="Class labels: top-1 per layer, and --max-top1-drop.")
@click.option("--task", type=click.Choice(list(TASKS)), default=None,
              help="classification: top-1 agreement per layer (implied by --labels).")
@click.option("--logits", default=None, metavar="OUTPUT",
              help="The classifier output (default: the first output).")
@click.option("--exclude", multiple=True, metavar="NAME",
              help="Node left in high precision in every model (name or regex). Repeatable.")
@click.option("--exclude-file", type=click.Path(dir_okay=False), default=None,
              help="File of nodes left in high precision in every model.")
@click.option("--target-sqnr", type=float, default=None, metavar="DB",
              help="Fallback target: output SQNR of the whole quantized model, in dB.")
@click.option("--max-top1-drop", type=float, default=None, metavar="POINTS",
              help="Fallback target: top-1 drop in percentage points (needs --labels).")
@click.option("--min-agreement", type=float, default=None, metavar="PERCENT",
              help="Fallback target: top-1 agreement with the FP32 model, in percent.")
@click.option("--eval-samples", type=int, default=None,
              help="Samples the fallback checks run on (default: all of the data).")
@click.option("--write-exclude", type=click.Path(dir_okay=False), default=None,
              help="Exclusion list to write with a target (default: MODEL's stem + .exclude.txt "
                   "in the current folder).")
@click.option("--top", type=int, default=20, show_default=True,
              help="Layers to print (0: all); JSON and -o always hold all.")
@provider_option
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Also write the result as JSON to this file.")
@config_option
@json_option
@verbosity_options
@click.pass_context
def sensitivity(ctx, **params):
    """Rank MODEL's quantized layers by quantization sensitivity.

    Each layer `qtool quantize` would quantize is quantized alone (with the calibrated scales,
    everything else FP32) and run on a small sample (--num-samples, default 32); layers are
    ranked by output SQNR versus FP32, lowest first.

    With a target (--target-sqnr, --max-top1-drop, --min-agreement) it then searches the fewest
    layers to keep in high precision so that the whole quantized model meets it, each candidate
    checked as a whole model on --eval-samples samples, and writes them to an exclusion file for
    `qtool quantize --exclude-file`. Exit status 3 when no set of layers meets the target.
    Defaults come from [sensitivity] of --config, [quantize] and [preprocess] too.
    """
    from qtool.analysis.gates import Gates
    from qtool.calib.calibfile.paths import calibration_files
    from qtool.errors import UsageError
    from qtool.io.outputs import guard_outputs

    params, config = apply_config(ctx, params, params["config_path"], "sensitivity")
    setup_logging(params["verbose"], params["quiet"])
    if not params["calib"]:
        raise UsageError("missing --calib CALIB.json (write one with `qtool calibrate`)")
    require_data(params)
    if params["top"] < 0:
        raise UsageError("--top must be 0 or more")
    quantize = _quantize_options(params, config)
    target = Gates(min_sqnr=params["target_sqnr"], max_top1_drop=params["max_top1_drop"],
                   min_agreement=params["min_agreement"])
    exclude_path = None
    if target.any:
        from qtool.analysis.sensitivity import default_exclude_path

        exclude_path = params["write_exclude"] or default_exclude_path(params["model"])
    guard_outputs([params["output"], exclude_path], models=[params["model"]],
                  calibrations=calibration_files(params["calib"]),
                  inputs=[params["data"], params["loader_script"], params["labels"],
                          params["exclude_file"], params["config_path"]])
    result = _measure(params, config, quantize, target)
    _report(params, result, quantize, exclude_path)


def _quantize_options(params: dict, config: dict):
    """[quantize] of the config, with the command's --exclude and --exclude-file added."""
    from qtool.config import section
    from qtool.placement.exclude import read_exclude_file
    from qtool.quantize.options import quantize_table_options

    config_dir = Path(params["config_path"]).resolve().parent if params["config_path"] else None
    quantize = quantize_table_options(section(config, "quantize"), config_dir)
    excludes = list(quantize.exclude) + list(params["exclude"])
    if params["exclude_file"]:
        excludes += read_exclude_file(params["exclude_file"])
    quantize.exclude = tuple(excludes)
    return quantize


def _measure(params: dict, config: dict, quantize, target):
    from qtool.analysis.sensitivity import DEFAULT_SAMPLES, SensitivityOptions, measure_sensitivity
    from qtool.config import section

    options = SensitivityOptions(
        num_samples=params["num_samples"] or DEFAULT_SAMPLES, eval_samples=params["eval_samples"],
        batch_size=params["batch_size"], preprocess=section(config, "preprocess"),
        inputs=section(config, "inputs"),
        loader_script=params["loader_script"], labels=params["labels"], task=params["task"],
        logits=params["logits"], quantize=quantize, target=target, provider=params["provider"],
    )
    progress = _LayerProgress(enabled=not params["quiet"])
    result = measure_sensitivity(params["model"], params["calib"], params["data"], options,
                                 on_layer=progress.layer, on_step=progress.step)
    progress.finish()
    return result


def _report(params: dict, result, quantize, exclude_path) -> None:
    """The exclusion file (when a target was met), the JSON and the text; exit status 3 when
    the target cannot be met."""
    from qtool.errors import GateFailed
    from qtool.io.atomic import write_json

    fallback = result.fallback
    if fallback is not None and fallback.passed:
        from qtool.analysis.fallback import write_exclude_file

        write_exclude_file(exclude_path, fallback.excluded, result.node_names,
                           header=exclude_header(result))
    report = result.to_dict()
    if fallback is not None:
        report["fallback"]["exclude_file"] = str(exclude_path) if fallback.passed else None
    if params["output"]:
        write_json(params["output"], report)
    text = render(result, params["top"])
    if fallback is not None and fallback.passed:
        text += f"\nwrote {exclude_path}"
    if params["output"]:
        text += f"\nwrote {params['output']}"
    for pattern in quantize.exclude:
        if not any(_matches(pattern, name) for name in result.node_names):
            log.warning("exclude pattern %r matches no node", pattern)
    emit(report, params["as_json"], text)
    if fallback is not None and not fallback.passed:
        raise GateFailed("the target is not met even with every quantized layer in high "
                         "precision: " + (fallback.final.metrics.get("failed") or "see the report"))


def _matches(pattern: str, name: str) -> bool:
    from qtool.placement.exclude import NameMatcher

    return NameMatcher([pattern]).match(name) is not None


TARGET_FLAGS = {"min_sqnr": "--target-sqnr", "max_top1_drop": "--max-top1-drop",
                "min_agreement": "--min-agreement"}


def target_text(result) -> str:
    return ", ".join(f"{TARGET_FLAGS.get(key, key)} {value:g}"
                     for key, value in result.target.to_dict().items())


def exclude_header(result) -> list[str]:
    reached = ", ".join(f"{key} {value:.6g}" if isinstance(value, float) else f"{key} {value}"
                        for key, value in result.fallback.final.metrics.items())
    count = f"{len(result.fallback.excluded)} of {len(result.layers)}"
    return [
        f"Layers kept in high precision by `qtool sensitivity` ({count})",
        f"model {result.model['path']} sha256 {result.model['sha256']}",
        f"calibration {result.calibration['path']} ({result.calibration['method']})",
        f"target: {target_text(result)}, on {result.eval_samples} samples; reached: {reached}",
    ]


def _fmt(value, digits: int = 4) -> str:
    from qtool.analysis.metrics import format_number

    if isinstance(value, str):
        return value
    return format_number(value, digits)


def render(result, top: int) -> str:
    seconds = result.seconds
    timing = f"{seconds['ranking']:.1f}s ({seconds['per_layer']:.2f}s per layer)"
    lines = [f"ranked {len(result.layers)} layers on {result.samples} samples in {timing}",
             f"  data  {result.data}"]
    whole = result.all_quantized.summary()
    fp32 = f", FP32 top-1 {result.fp32_top1:.2f}%" if result.fp32_top1 is not None else ""
    lines.append(f"all layers quantized: sqnr {_fmt(whole['sqnr_db'])} dB, cosine "
                 f"{_fmt(whole['cosine'], 6)}{_class_text(whole)}{fp32}")
    header = ["rank", "node", "op", "sqnr_db", "cosine"]
    classification = "top1_agreement_percent" in whole
    labelled = "top1_percent" in whole
    if classification:
        header.append("agree%")
    if labelled:
        header.append("top1%")
    rows = [tuple(header)]
    shown = result.layers if top == 0 else result.layers[:top]
    for layer in shown:
        summary = layer.evaluation.summary()
        row = [str(layer.rank), layer.node, layer.op_type, _fmt(summary["sqnr_db"]),
               _fmt(summary["cosine"], 6)]
        if classification:
            row.append(f"{summary['top1_agreement_percent']:.2f}")
        if labelled:
            row.append(f"{summary['top1_percent']:.2f}")
        rows.append(tuple(row))
    lines.append("")
    lines.extend(_left_table(rows))
    if len(shown) < len(result.layers):
        lines.append(f"... {len(result.layers) - len(shown)} more (--top 0 shows all)")
    fallback = result.fallback
    if fallback is not None:
        target = target_text(result)
        lines.append("")
        lines.append(f"fallback for {target} on {result.eval_samples} samples: "
                     f"{fallback.checks} check{'s' if fallback.checks != 1 else ''} in "
                     f"{seconds.get('fallback', 0):.1f}s")
        final = fallback.final.metrics
        if fallback.passed:
            lines.append(f"  {len(fallback.excluded)} of {len(result.layers)} layers in high "
                         f"precision: sqnr {_fmt(final['sqnr_db'])} dB, cosine "
                         f"{_fmt(final['cosine'], 6)}" + _class_text(final))
            lines.extend(f"    {name}" for name in fallback.excluded)
        else:
            lines.append(f"  not met with every layer in high precision: {final.get('failed')}")
    return "\n".join(lines)


def _class_text(summary: dict) -> str:
    text = ""
    if summary.get("top1_agreement_percent") is not None:
        text += f", top-1 agreement {summary['top1_agreement_percent']:.2f}%"
    if summary.get("top1_percent") is not None:
        text += f", top-1 {summary['top1_percent']:.2f}%"
    return text


def _left_table(rows: list[tuple]) -> list[str]:
    """Text columns left-aligned, numeric columns right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    numeric = [i not in (1, 2) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [cell.rjust(width) if right else cell.ljust(width)
                 for cell, width, right in zip(row, widths, numeric)]
        lines.append("  ".join(cells).rstrip())
    return lines


class _LayerProgress:
    """'ranking: 12/60 layers' on a terminal's stderr; fallback checks as info log lines."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and sys.stderr.isatty()
        self.drawn = False

    def layer(self, done: int, total: int, name: str) -> None:
        if self.enabled:
            click.echo(f"\rranking: {done}/{total} layers\x1b[K", nl=False, err=True)
            self.drawn = True

    def step(self, step) -> None:
        self.finish()
        verdict = "pass" if step.passed else "fail"
        log.info("fallback %s: %d layers in high precision: %s%s", step.phase, len(step.excluded),
                 verdict, f" ({step.metrics['failed']})" if not step.passed else "")

    def finish(self) -> None:
        if self.drawn:
            click.echo("", err=True)
            self.drawn = False
