"""The calibrate step's options: declared once (CALIBRATE), for the flags of `qtool calibrate`,
the [calibrate] table of a config, and CalibrateOptions."""

from __future__ import annotations

from dataclasses import dataclass, field

from qtool import limits
from qtool.backends.onnxruntime.providers import AUTO as AUTO_PROVIDER
from qtool.backends.onnxruntime.providers import check_choice as check_provider
from qtool.calib.choices import AUTO, TASKS
from qtool.calib.histogram import DEFAULT_BINS
from qtool.errors import UsageError
from qtool.options import Option, OptionGroup, data_options, require_positive
from qtool.thresholds import METHODS
from qtool.thresholds.percentile import DEFAULT_PERCENTILE

CALIBRATION_METHODS = (*METHODS, AUTO)

CALIBRATE = OptionGroup("calibrate", [
    *data_options(),
    # auto: measured best on the real-model matrix (BENCHMARKS.md)
    Option("method", default=AUTO, choices=CALIBRATION_METHODS,
           help="Threshold method. auto: score every method's thresholds, then single tensors' "
                "choices, against the FP32 outputs on held-aside samples."),
    Option("task", choices=TASKS,
           help="What --method auto scores: classification (top-1 agreement first); default: "
                "the mean SQNR of the outputs."),
    Option("auto_budget", float, 1.0,
           help="Quantized runs --method auto may spend, in multiples of the calibration samples "
                "(more tries more single-tensor choices)."),
    Option("bins", int, DEFAULT_BINS, help="Histogram bins."),
    Option("percentile", float, DEFAULT_PERCENTILE, help="Percentile for --method percentile."),
    Option("coverage", float, help="Covered mass for --method coverage."),
    Option("bounded_max", bool, True,
           help="Outputs of bounded activations (ReLU6 and other Clips, Sigmoid, Tanh, Softmax) "
                "take their observed max instead of the method's threshold."),
    Option("shard", metavar="K/N", help="Calibrate every N-th batch from K.", pipeline=False),
])


@dataclass
class CalibrateOptions:
    method: str = CALIBRATE.default("method")
    bins: int = CALIBRATE.default("bins")
    percentile: float = CALIBRATE.default("percentile")
    coverage: float | None = CALIBRATE.default("coverage")
    num_samples: int | None = CALIBRATE.default("num_samples")
    batch_size: int | None = CALIBRATE.default("batch_size")
    shard: str | None = CALIBRATE.default("shard")
    preprocess: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)  # [inputs] table: batch axes
    loader_script: str | None = CALIBRATE.default("loader_script")
    bounded_max: bool = CALIBRATE.default("bounded_max")
    task: str | None = CALIBRATE.default("task")
    auto_budget: float = CALIBRATE.default("auto_budget")
    provider: str = AUTO_PROVIDER  # onnxruntime's execution providers

    def method_params(self, method: str | None = None) -> dict:
        """The parameters of `method` (default: this calibration's own method)."""
        method = method or self.method
        if method in ("percentile", AUTO):
            return {"percentile": self.percentile}
        if method == "coverage" and self.coverage is not None:
            return {"coverage": self.coverage}
        return {}

    def validate(self) -> None:
        from qtool.calib.collection import parse_shard

        if self.method not in CALIBRATION_METHODS:
            raise UsageError(f"unknown method {self.method!r}; choose one of "
                             f"{', '.join(CALIBRATION_METHODS)}")
        if self.task is not None and self.task not in TASKS:
            raise UsageError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        if not self.auto_budget > 0:
            raise UsageError(f"--auto-budget must be positive, got {self.auto_budget}")
        if self.bins < 128:
            raise UsageError(f"--bins must be at least 128 (got {self.bins})")
        cap = limits.current().bins
        if self.bins > cap:
            raise UsageError(f"--bins {self.bins} is above the cap of {cap} (each tensor's "
                             f"histogram may grow to 64 times --bins); "
                             f"{limits.how_to_raise('bins')}")
        if not 0 < self.percentile <= 100:
            raise UsageError(f"--percentile must be in (0, 100], got {self.percentile}")
        if self.coverage is not None and not 0 < self.coverage <= 1:
            raise UsageError(f"coverage must be in (0, 1], got {self.coverage}")
        require_positive(self, ("num_samples", "batch_size"))
        parse_shard(self.shard)
        check_provider(self.provider)


def calibrate_options(values: dict, *, preprocess: dict, inputs: dict,
                      provider: str) -> CalibrateOptions:
    """CalibrateOptions from option values keyed by name (flags, or a checked [calibrate] table
    with its defaults), the [preprocess] and [inputs] tables and the provider."""
    fields = CALIBRATE.fields(values)
    fields.pop("data", None)  # the data is calibrate()'s argument, not an option of it
    fields["loader_script"] = None if fields.get("loader_script") is None \
        else str(fields["loader_script"])
    return CalibrateOptions(**fields, preprocess=preprocess, inputs=inputs, provider=provider)
