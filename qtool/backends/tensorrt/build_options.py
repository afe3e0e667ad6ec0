"""The build step's options, declared once (BUILD) for `qtool build`, the [build] table and
BuildOptions. Imports no TensorRT: every command's --help works without it."""

from __future__ import annotations

from dataclasses import dataclass, field

from qtool.errors import UsageError
from qtool.options import FILE, Option, OptionGroup, as_list

MAX_OPTIMIZATION_LEVEL = 5

SHAPES_HELP = (
    "Optimization-profile range of an input, NAME:MINxOPTxMAX with dims joined by ',' "
    "(e.g. input:1,3,224,224x8,3,224,224x32,3,224,224), or NAME:DIMS for a fixed shape. "
    "Repeat for each dynamic input; the k-th --shapes of an input belongs to profile k. "
    "Without it, dynamic dimensions take the sizes seen in calibration (--calib, or MODEL's "
    "calibration file beside it), else the batch axis is 1."
)

BUILD = OptionGroup("build", [
    Option("required", bool, False, command=False,
           help="Fail the pipeline when TensorRT or a GPU is missing (else the build is skipped)."),
    Option("int8", bool, False,
           help="INT8 engine from the model's Q/DQ nodes (run `qtool quantize` first)."),
    Option("fp16", bool, False,
           help="FP16 for the non-quantized layers (TensorRT 11 / strongly typed: the model is "
                "converted to FP16 on a temporary copy)."),
    Option("strongly_typed", bool, False,
           help="TensorRT 10: build a strongly typed network (always so on TensorRT 11)."),
    Option("shapes", multiple=True, metavar="NAME:MINxOPTxMAX", default=(), help=SHAPES_HELP),
    Option("calib", path=FILE, pipeline=False,
           help="Calibration file whose recorded input sizes set the dynamic dimensions "
                "(default: MODEL.calib.json, or the FP32 model's for MODEL.int8.onnx)."),
    Option("batch", int, metavar="N",
           help="Batch axis of every dynamic input from 1 to N (OPT = MAX = N), without --shapes."),
    Option("workspace", int, metavar="MIB", field="workspace_mib",
           help="Workspace memory pool limit in MiB."),
    Option("timing_cache", path=FILE, writes=True,
           help="Tactic timing cache: read if it exists, updated after the build."),
    Option("builder_optimization_level", int, minimum=0, maximum=MAX_OPTIMIZATION_LEVEL,
           help="TensorRT builder optimization level (0-5; TensorRT's default is 3)."),
])


@dataclass
class BuildOptions:
    int8: bool = BUILD.default("int8")
    fp16: bool = BUILD.default("fp16")
    strongly_typed: bool = BUILD.default("strongly_typed")
    shapes: list = field(default_factory=list)
    workspace_mib: int | None = BUILD.default("workspace")
    timing_cache: str | None = BUILD.default("timing_cache")
    builder_optimization_level: int | None = BUILD.default("builder_optimization_level")
    log_level: str = "WARNING"
    calib: str | None = BUILD.default("calib")
    batch: int | None = BUILD.default("batch")

    def validate(self) -> None:
        if self.batch is not None and self.batch < 1:
            raise UsageError(f"--batch must be a positive integer (got {self.batch})")
        if self.shapes and (self.batch is not None or self.calib is not None):
            raise UsageError("--shapes gives every range itself: it takes no --batch or --calib")
        if self.workspace_mib is not None and self.workspace_mib < 1:
            raise UsageError(f"--workspace must be a positive number of MiB (got {self.workspace_mib})")
        level = self.builder_optimization_level
        if level is not None and not 0 <= level <= MAX_OPTIMIZATION_LEVEL:
            raise UsageError(f"--builder-optimization-level must be 0..{MAX_OPTIMIZATION_LEVEL} (got {level})")

    def to_dict(self) -> dict:
        return dict(self.__dict__)



# The pipeline quantizes before it builds: its engine is INT8 unless [build] int8 = false.
PIPELINE_DEFAULTS = {"int8": True}


def build_options(values: dict, **extra):
    """BuildOptions from option values keyed by name (flags, or a checked [build] table with its
    defaults); `extra`: the fields no option gives (log_level)."""
    fields = BUILD.fields(values)
    fields.pop("required", None)  # whether the pipeline builds at all, not how
    fields["shapes"] = [str(shape) for shape in as_list(fields.get("shapes", ()))]
    if fields.get("timing_cache") is not None:
        fields["timing_cache"] = str(fields["timing_cache"])
    return BuildOptions(**fields, **extra)
