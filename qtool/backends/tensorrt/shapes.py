"""`--shapes`: optimization-profile ranges for dynamic inputs.

Syntax, one input per option, repeatable:

    --shapes NAME:MINxOPTxMAX      e.g. input:1,3,224,224x8,3,224,224x32,3,224,224
    --shapes NAME:DIMS             a fixed shape (min = opt = max)

Dimensions are joined by ',' and the three shapes by 'x'. The name is everything before the
last ':', so names such as `input:0` work (`input:0:1,3x4,3x8,3`).

Without --shapes, a model with dynamic inputs gets one profile (`default_profile`): each dynamic
dimension takes the sizes seen in calibration (the calibration file's input signature; the batch
axis from 1, the others from the smallest seen), with OPT = MAX = the largest seen; `--batch N`
sets the batch axis to 1..N. With no calibration the batch axis alone defaults to 1, after one
warning; any other dynamic dimension without a known size is an error that says how to give it.

Several optimization profiles: the k-th `--shapes` given for an input belongs to profile k, so

    --shapes a:1,8x4,8x8,8 --shapes b:1x4x8 --shapes a:16,8x32,8x64,8 --shapes b:16x32x64

makes profile 0 = {a: 1..8, b: 1..8} and profile 1 = {a: 16..64, b: 16..64}. Every profile must
give every dynamic input a range; static inputs need none (a range given for one must equal its
static shape).
"""

from __future__ import annotations

from dataclasses import dataclass

from qtool.errors import QtoolError
from qtool.io.batch_axes import model_batch_axes


@dataclass(frozen=True)
class ShapeRange:
    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def describe(self) -> str:
        return f"{self.name}:" + "x".join(",".join(map(str, s)) for s in (self.min, self.opt, self.max))

    def to_dict(self) -> dict:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


def _dims(text: str, spec: str) -> tuple[int, ...]:
    if text.strip() == "":
        raise QtoolError(f"invalid --shapes {spec!r}: empty shape (dimensions are joined by ',')")
    dims = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit():
            raise QtoolError(
                f"invalid --shapes {spec!r}: {part!r} is not a non-negative integer dimension"
            )
        dims.append(int(part))
    return tuple(dims)


def parse_shape_spec(spec: str) -> ShapeRange:
    """`NAME:MINxOPTxMAX` or `NAME:DIMS` -> ShapeRange, checking rank and min <= opt <= max."""
    name, sep, shapes = spec.rpartition(":")
    if not sep or not name:
        raise QtoolError(f"invalid --shapes {spec!r}: expected NAME:MINxOPTxMAX (e.g. input:1,3x8,3x32,3)")
    parts = shapes.split("x")
    if len(parts) not in (1, 3):
        raise QtoolError(
            f"invalid --shapes {spec!r}: give one shape or three (MINxOPTxMAX), not {len(parts)}"
        )
    shapes_ = [_dims(part, spec) for part in parts]
    if len(shapes_) == 1:
        shapes_ = shapes_ * 3
    low, opt, high = shapes_
    if not len(low) == len(opt) == len(high):
        raise QtoolError(f"invalid --shapes {spec!r}: MIN, OPT and MAX have different ranks")
    for axis, (a, b, c) in enumerate(zip(low, opt, high)):
        if not a <= b <= c:
            raise QtoolError(f"invalid --shapes {spec!r}: axis {axis} needs MIN <= OPT <= MAX ({a}, {b}, {c})")
    return ShapeRange(name, low, opt, high)


def parse_profiles(specs) -> list[dict[str, ShapeRange]]:
    """Group the `--shapes` values into profiles: the k-th range of an input goes to profile k."""
    profiles: list[dict[str, ShapeRange]] = []
    for spec in specs or ():
        shape_range = parse_shape_spec(spec)
        index = 0
        while index < len(profiles) and shape_range.name in profiles[index]:
            index += 1
        if index == len(profiles):
            profiles.append({})
        profiles[index][shape_range.name] = shape_range
    return profiles


def is_dynamic(shape) -> bool:
    return any(not isinstance(dim, int) or dim < 0 for dim in shape)


def example_spec(name: str, shape) -> str:
    """A --shapes example for a dynamic input: its dynamic dims as 1, 8 and 32."""
    def fill(value):
        return ",".join(str(d) if isinstance(d, int) and d >= 0 else str(value) for d in shape)
    return f"{name}:{fill(1)}x{fill(8)}x{fill(32)}"


def check_profiles(profiles: list[dict[str, ShapeRange]], inputs) -> None:
    """Check the ranges against the model's inputs (objects with .name and .shape, where a
    dynamic dim is a str, None or a negative int)."""
    by_name = {spec.name: spec for spec in inputs}
    for index, profile in enumerate(profiles):
        for name, shape_range in profile.items():
            if name not in by_name:
                known = ", ".join(by_name) or "none"
                raise QtoolError(f"--shapes names {name!r}, which is not an input of the model (inputs: {known})")
            shape = tuple(by_name[name].shape)
            if shape and len(shape) != len(shape_range.min):
                raise QtoolError(
                    f"--shapes {shape_range.describe()}: input {name!r} has rank {len(shape)}, "
                    f"not {len(shape_range.min)}"
                )
            for axis, dim in enumerate(shape):
                if isinstance(dim, int) and dim >= 0:
                    given = {shape_range.min[axis], shape_range.opt[axis], shape_range.max[axis]}
                    if given != {dim}:
                        raise QtoolError(
                            f"--shapes {shape_range.describe()}: axis {axis} of input {name!r} is "
                            f"fixed at {dim} in the model"
                        )
    for spec in inputs:
        if not is_dynamic(spec.shape):
            continue
        dims = ",".join(str(d) if isinstance(d, int) and d >= 0 else (str(d) if d else "?") for d in spec.shape)
        if not profiles:
            raise QtoolError(
                f"input {spec.name!r} has a dynamic shape [{dims}]: give its range with "
                f"--shapes NAME:MINxOPTxMAX (e.g. --shapes {example_spec(spec.name, spec.shape)})"
            )
        for index, profile in enumerate(profiles):
            if spec.name not in profile:
                raise QtoolError(
                    f"optimization profile {index} has no range for dynamic input {spec.name!r} [{dims}]"
                    f" (the k-th --shapes of an input belongs to profile k)"
                )


# Dimension names that say "batch" (exporters write N, batch, batch_size, bs, ...).
def _dims_text(shape) -> str:
    return ",".join(str(d) if isinstance(d, int) and d >= 0 else (str(d) if d else "?") for d in shape)


def default_profile(inputs, seen: dict | None = None, batch: int | None = None,
                    seen_from: str = "", batch_axes: dict | None = None,
                    ) -> tuple[dict[str, ShapeRange], list[str]]:
    """One optimization profile for the dynamic inputs when no --shapes is given.

    `seen`: input name -> (smallest, largest) shape seen in calibration (qtool.calib.signature);
    `batch`: --batch N; `batch_axes`: input name -> batch axis the calibration ran with, over
    the model's own (qtool.io.batch_axes). Returns the profile and the inputs whose batch axis
    defaulted to 1 (the caller warns once). Raises QtoolError for a dynamic non-batch dimension
    of unknown size.
    """
    seen = seen or {}
    axes = model_batch_axes(inputs) | (batch_axes or {})
    profile: dict[str, ShapeRange] = {}
    defaulted: list[str] = []
    for spec in inputs:
        shape = tuple(spec.shape)
        if not is_dynamic(shape):
            continue
        batch_axis = axes.get(spec.name)
        known = seen.get(spec.name)
        if known is not None and len(known[0]) != len(shape):
            known = None  # recorded for another rank: not this model's input
        low, opt, high = [], [], []
        unknown = []
        for axis, dim in enumerate(shape):
            if isinstance(dim, int) and dim >= 0:
                low.append(dim), opt.append(dim), high.append(dim)
            elif axis == batch_axis and batch is not None:
                low.append(1), opt.append(batch), high.append(batch)
            elif known is not None:
                smallest, largest = known[0][axis], known[1][axis]
                low.append(1 if axis == batch_axis else smallest)
                opt.append(largest), high.append(largest)
            elif axis == batch_axis:
                low.append(1), opt.append(1), high.append(1)
                defaulted.append(spec.name)
            else:
                unknown.append(axis)
        if unknown:
            axes = ", ".join(f"{axis} ({shape[axis] or '?'})" for axis in unknown)
            where = (f"{seen_from} records no sizes for it" if seen_from
                     else "no calibration file gives the sizes seen")
            raise QtoolError(
                f"input {spec.name!r} [{_dims_text(shape)}] has dynamic axis {axes} of unknown "
                f"size ({where}): give its range with --shapes (e.g. --shapes "
                f"{example_spec(spec.name, shape)}), or --calib with a calibration of this "
                "model, which records the sizes it saw")
        profile[spec.name] = ShapeRange(spec.name, tuple(low), tuple(opt), tuple(high))
    return profile, defaulted
