"""`qtool pipeline`: the CI step. Calibrate, quantize, check, compare (and build when TensorRT
and a GPU are there) from one TOML config; artifacts and summary.json in one folder."""

from __future__ import annotations

import click

from qtool.cli.common import PROVIDER_CHOICES, json_option, setup_logging, verbosity_options


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("-o", "--output-dir", type=click.Path(file_okay=False), default=None,
              help="Artifact folder (default: [pipeline] output_dir of CONFIG).")
@click.option("--force-calibrate", is_flag=True,
              help="Calibrate again even when model, data and options are unchanged.")
@click.option("--provider", type=click.Choice(PROVIDER_CHOICES), default=None,
              help="onnxruntime execution provider for calibration and comparison (default: "
                   "[pipeline] provider, else auto: cuda when onnxruntime-gpu offers it).")
@json_option
@verbosity_options
def pipeline(config, output_dir, force_calibrate, provider, as_json, verbose, quiet):
    """Run calibrate -> quantize -> check -> compare (-> build) as CONFIG describes.

    Every option of every step comes from CONFIG's tables ([pipeline], [preprocess],
    [calibrate], [quantize], [check], [compare], [build]); relative paths in it resolve against
    the config file's folder. A re-run with an unchanged model, data and calibration options
    reuses the calibration file. The build runs when TensorRT and a GPU are available, and must
    when [build] required = true.

    Writes summary.json (versions, model sha256, method, per-step time, metrics, gates) in the
    output folder. Exit status 0 when everything passed, 3 when an accuracy gate failed, 1 when
    a step failed.
    """
    from qtool.cli.common import emit
    from qtool.pipeline import raise_for, run_pipeline

    setup_logging(verbose, quiet)

    def show(record) -> None:
        if not as_json:
            click.echo(f"{record.name:<15} {record.status:<11} {record.seconds:6.2f}s  "
                       f"{record.detail}")

    def progress(label: str):
        from qtool.cli.progress import SampleProgress

        return SampleProgress(label, enabled=not quiet)

    result = run_pipeline(config, output_dir, force_calibrate=force_calibrate, on_step=show,
                          progress=progress, provider=provider)
    summary = result.to_dict()
    lines = [""]
    compare = result.steps.get("compare")
    if compare is not None and compare.data.get("classification"):
        cls = compare.data["classification"]
        if "reference" in cls:
            lines.append(f"FP32 top-1 {cls['reference']['top1_percent']:.2f}%   INT8 top-1 "
                         f"{cls['candidate']['top1_percent']:.2f}%   (drop "
                         f"{cls['top1_drop_points']:.2f} points, top-1 agreement "
                         f"{cls['top1_agreement_percent']:.2f}%)")
        else:
            lines.append(f"FP32 vs INT8 top-1 agreement {cls['top1_agreement_percent']:.2f}%")
    if result.gates:
        lines.extend(gate.describe() for gate in result.gates)
        lines.append("gate FAILED" if result.gate_failed else "gate passed")
    else:
        lines.append("no accuracy gate configured ([compare] min_sqnr, min_cosine, "
                     "max_top1_drop, min_agreement)")
    lines.append(f"wrote {result.summary_path}")
    emit(summary, as_json, "\n".join(lines))
    raise_for(result)
