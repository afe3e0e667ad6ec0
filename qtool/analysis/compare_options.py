"""The compare step's options, declared once (COMPARE) for `qtool compare`, the [compare] table
and CompareOptions (its gates included)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from qtool.backends.onnxruntime.providers import AUTO as AUTO_PROVIDER
from qtool.backends.onnxruntime.providers import check_choice as check_provider
from qtool.calib.choices import TASKS  # auto scores the tasks compare measures
from qtool.errors import UsageError
from qtool.options import FILE, Option, OptionGroup, as_list, data_options, require_positive

if TYPE_CHECKING:
    from qtool.analysis.gates import Gates

COMPARE_TASKS = (*TASKS, "sequence")

GATE_OPTIONS = [
    Option("min_sqnr", float, metavar="DB", help="Gate: SQNR in dB of every output."),
    Option("min_cosine", float, help="Gate: cosine similarity of every output."),
    Option("max_top1_drop", float, metavar="POINTS",
           help="Gate: top-1 accuracy drop in percentage points (needs --labels)."),
    Option("min_agreement", float, metavar="PERCENT",
           help="Gate: top-1 agreement of the two models, in percent."),
    Option("max_flips_above_margin", metavar="N:M",
           help="Gate: at most N top-1 disagreements (classifier samples or sequence positions) "
                "where the reference's top-1 led by more than M."),
    Option("min_metric", multiple=True, metavar="NAME=VALUE", default=(),
           help="Gate: a named metric (of --metric-script or the sequence comparison) at least "
                "VALUE. Repeatable."),
    Option("max_metric", multiple=True, metavar="NAME=VALUE", default=(),
           help="Gate: a named metric (of --metric-script or the sequence comparison) at most "
                "VALUE. Repeatable."),
]

COMPARE = OptionGroup("compare", [
    *data_options(),
    Option("labels", path=FILE,
           help="Class labels (.npy, one int a line, or '<file> <int>' lines): top-1/top-5."),
    Option("task", choices=COMPARE_TASKS,
           help="classification: top-1 agreement (implied by --labels); sequence: per-position "
                "agreement of [batch, positions, classes] scores (implied by --ctc-blank; "
                "detected for softmax outputs of that shape)."),
    Option("logits", metavar="OUTPUT",
           help="The classifier or sequence output to score (default: the first that fits)."),
    Option("ctc_blank", int, minimum=0, metavar="K",
           help="Sequences: decode both models greedily (CTC, blank class K) and report the "
                "same-sequence rate and token error rate."),
    Option("metric_script", path=FILE, metavar="FILE",
           help="Python file with update(reference, candidate[, inputs]) and result() -> "
                "{name: number}: your own metric (runs your code)."),
    *GATE_OPTIONS,
])


def _no_gates():
    from qtool.analysis.gates import Gates  # numpy's import stays out of --help

    return Gates()


@dataclass
class CompareOptions:
    num_samples: int | None = COMPARE.default("num_samples")
    batch_size: int | None = COMPARE.default("batch_size")
    preprocess: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)  # [inputs] table: batch axes
    loader_script: str | None = COMPARE.default("loader_script")
    labels: str | None = COMPARE.default("labels")
    task: str | None = COMPARE.default("task")
    logits: str | None = COMPARE.default("logits")
    ctc_blank: int | None = COMPARE.default("ctc_blank")
    metric_script: str | None = COMPARE.default("metric_script")
    gates: Gates = field(default_factory=_no_gates)
    provider: str = AUTO_PROVIDER    # onnxruntime's execution providers for ONNX models

    @property
    def classification(self) -> bool:
        return self.task == "classification" or self.labels is not None

    @property
    def sequence(self) -> bool:
        return self.task == "sequence" or self.ctc_blank is not None

    def validate(self) -> CompareOptions:
        check_provider(self.provider)
        if self.task is not None and self.task not in COMPARE_TASKS:
            raise UsageError(f"unknown task {self.task!r}; choose one of "
                             f"{', '.join(COMPARE_TASKS)}")
        require_positive(self, ("num_samples", "batch_size"))
        if self.ctc_blank is not None and self.ctc_blank < 0:
            raise UsageError("--ctc-blank is a class index >= 0")
        if self.classification and self.sequence:
            raise UsageError("--ctc-blank and --task sequence score a sequence output; "
                             "--labels and --task classification a classifier: choose one")
        self.gates.validate()
        if self.gates.needs_labels and self.labels is None:
            raise UsageError("--max-top1-drop needs labels (--labels FILE)")
        if self.gates.min_agreement is not None and not self.classification:
            raise UsageError("--min-agreement needs --task classification or --labels FILE")
        return self


def compare_options(values: dict, *, preprocess: dict, inputs: dict, provider: str,
                    where: Callable[[str], str]):
    """CompareOptions from option values keyed by name (flags, or a checked [compare] table with
    its defaults). `where(name)` names an option in messages (a flag, or a config key)."""
    from qtool.analysis.gates import Gates, parse_flips_bound, parse_metric_bound


    def text(name):
        return None if values[name] is None else str(values[name])

    def bounds(name):
        return tuple(parse_metric_bound(item, where(name)) for item in as_list(values[name]))

    flips = values["max_flips_above_margin"]
    return CompareOptions(
        num_samples=values["num_samples"], batch_size=values["batch_size"],
        preprocess=preprocess, inputs=inputs, loader_script=text("loader_script"),
        labels=text("labels"), task=values["task"], logits=values["logits"],
        ctc_blank=values["ctc_blank"], metric_script=text("metric_script"),
        gates=Gates(values["min_sqnr"], values["min_cosine"], values["max_top1_drop"],
                    values["min_agreement"],
                    max_flips_above_margin=None if flips is None else parse_flips_bound(flips),
                    min_metric=bounds("min_metric"), max_metric=bounds("max_metric")),
        provider=provider,
    )
