"""`qtool compare`: run two models on the same data, report how far apart their outputs are, and
optionally fail (exit status 3) when an accuracy gate is not met."""

from __future__ import annotations

import click

from qtool.cli.common import (
    apply_config,
    config_option,
    data_options,
    emit,
    json_option,
    provider_option,
    require_data,
    setup_logging,
    verbosity_options,
)


def gate_options(func):
    func = click.option("--max-metric", "max_metric", multiple=True, metavar="NAME=VALUE",
                        help="Gate: a named metric (of --metric-script or the sequence "
                             "comparison) at most VALUE. Repeatable.")(func)
    func = click.option("--min-metric", "min_metric", multiple=True, metavar="NAME=VALUE",
                        help="Gate: a named metric (of --metric-script or the sequence "
                             "comparison) at least VALUE. Repeatable.")(func)
    func = click.option("--max-flips-above-margin", default=None, metavar="N:M",
                        help="Gate: at most N top-1 disagreements (classifier samples or "
                             "sequence positions) where the reference's top-1 led by more "
                             "than M.")(func)
    func = click.option("--min-agreement", type=float, default=None, metavar="PERCENT",
                        help="Gate: top-1 agreement of the two models, in percent.")(func)
    func = click.option("--max-top1-drop", type=float, default=None, metavar="POINTS",
                        help="Gate: top-1 accuracy drop in percentage points (needs --labels).")(func)
    func = click.option("--min-cosine", type=float, default=None,
                        help="Gate: cosine similarity of every output.")(func)
    func = click.option("--min-sqnr", type=float, default=None, metavar="DB",
                        help="Gate: SQNR in dB of every output.")(func)
    return func


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("reference", type=click.Path(dir_okay=False))
@click.argument("candidate", type=click.Path(dir_okay=False))
@data_options
@click.option("--labels", type=click.Path(dir_okay=False), default=None,
              help="Class labels (.npy, one int a line, or '<file> <int>' lines): top-1/top-5.")
@click.option("--task", type=click.Choice(["classification", "sequence"]), default=None,
              help="classification: top-1 agreement (implied by --labels); sequence: "
                   "per-position agreement of [batch, positions, classes] scores (implied by "
                   "--ctc-blank; detected for softmax outputs of that shape).")
@click.option("--logits", "logits", default=None, metavar="OUTPUT",
              help="The classifier or sequence output to score (default: the first that fits).")
@click.option("--ctc-blank", type=click.IntRange(min=0), default=None, metavar="K",
              help="Sequences: decode both models greedily (CTC, blank class K) and report the "
                   "same-sequence rate and token error rate.")
@click.option("--metric-script", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Python file with update(reference, candidate[, inputs]) and result() -> "
                   "{name: number}: your own metric (runs your code).")
@gate_options
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
    from qtool.analysis.compare import CompareOptions, compare_models
    from qtool.analysis.gates import Gates, parse_flips_bound, parse_metric_bound
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
    flips = params["max_flips_above_margin"]
    options = CompareOptions(
        num_samples=params["num_samples"], batch_size=params["batch_size"],
        preprocess=section(config, "preprocess"),
        inputs=section(config, "inputs"), loader_script=params["loader_script"],
        labels=params["labels"], task=params["task"], logits=params["logits"],
        ctc_blank=params["ctc_blank"], metric_script=params["metric_script"],
        gates=Gates(params["min_sqnr"], params["min_cosine"], params["max_top1_drop"],
                    params["min_agreement"],
                    max_flips_above_margin=None if flips is None else parse_flips_bound(flips),
                    min_metric=tuple(parse_metric_bound(text, "--min-metric")
                                     for text in params["min_metric"]),
                    max_metric=tuple(parse_metric_bound(text, "--max-metric")
                                     for text in params["max_metric"])),
        provider=params["provider"],
    )
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
