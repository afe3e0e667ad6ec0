"""`qtool compare`: run two models on the same data, report how far apart their outputs are, and
optionally fail (exit status 3) when an accuracy gate is not met."""

from __future__ import annotations

import click

from qtool.analysis.compare_options import COMPARE, compare_options
from qtool.cli.common import (
    apply_config,
    config_option,
    emit,
    json_option,
    provider_option,
    require_data,
    setup_logging,
    verbosity_options,
)
from qtool.cli.options import click_options


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("reference", type=click.Path(dir_okay=False))
@click.argument("candidate", type=click.Path(dir_okay=False))
@click_options(COMPARE)
@provider_option
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False), default=None,
              help="Also write the result as JSON to this file.")
@config_option
@json_option
@verbosity_options
@click.pass_context
def compare(ctx, **params):
    """Compare CANDIDATE's outputs with REFERENCE's on the same data.

    Either model may be an ONNX file or a TensorRT engine (.engine/.plan, needs TensorRT and a
    GPU). Reports per output SQNR (dB), cosine similarity, max and mean absolute error; with
    --labels or --task classification also top-1/top-5 accuracy and top-1 agreement.

    With --task sequence (or --ctc-blank K) it compares [batch, positions, classes] scores
    position by position and, with a blank, as greedily decoded sequences. --metric-script runs
    your own post-processing and metric on both models' outputs.

    With a threshold (--min-sqnr, --min-cosine, --max-top1-drop, --min-agreement,
    --max-flips-above-margin, --min-metric, --max-metric) it is an accuracy gate: exit status 3
    when one is not met. Defaults come from the [compare] table of
    --config, image preprocessing from its [preprocess] table.
    """
    from qtool.analysis.compare import compare_models
    from qtool.cli.progress import SampleProgress
    from qtool.config import section
    from qtool.errors import GateFailed
    from qtool.io.atomic import write_json
    from qtool.io.outputs import guard_outputs

    params, config = apply_config(ctx, params, params["config_path"], "compare")
    setup_logging(params["verbose"], params["quiet"])
    require_data(params)
    guard_outputs([params["output"]], models=[params["reference"], params["candidate"]],
                  inputs=[params["data"], params["loader_script"], params["labels"],
                          params["metric_script"], params["config_path"]])
    options = compare_options(params, preprocess=section(config, "preprocess"),
                              inputs=section(config, "inputs"), provider=params["provider"],
                              where=lambda name: COMPARE[name].long_flag)
    progress = SampleProgress("comparing", enabled=not params["quiet"])
    try:
        result = compare_models(params["reference"], params["candidate"], params["data"], options,
                                on_batch=progress.advance, on_start=progress.begin,
                                output=params["output"])
    finally:
        progress.finish()
    report = result.to_dict()
    if params["output"]:
        write_json(params["output"], report)
    text = result.render_text()
    if params["output"]:
        text += f"\nwrote {params['output']}"
    emit(report, params["as_json"], text)
    failure = result.failure()
    if failure:
        raise GateFailed(failure)
