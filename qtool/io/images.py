"""Image files -> model input arrays, described by the [preprocess] table of a config.

    resize         int: shorter side to this, keeping the aspect ratio (the longer side is
                   truncated: int(size * long / short), as torchvision does); [h, w]: exactly
    resize_filter  nearest | bilinear (default) | bicubic | lanczos  (Pillow's filters)
    crop           int or [h, w]: centre crop, top = round((H - h) / 2) (half to even)
    color          RGB (default) | BGR | GRAY; GRAY is the default for a 1-channel input
    scale          multiplies the 0..255 pixel first (default 1.0)
    mean, std      one number or one per channel, in output channel order (for BGR: B, G, R)
    layout         NCHW | NHWC; default: the axis of the model input with 1 or 3 channels (NCHW
                   when that is ambiguous)
    dtype          default: the model input's; arithmetic runs in float32 (float64 when the
                   output is float64), then casts; integer outputs are rounded half to even and
                   clipped to their range

x = (pixel * scale - mean) / std, computed in that order. Without resize and crop, a model input
with static height and width gets the image resized straight to them. Alpha channels are dropped
(not composited); grayscale and palette images are converted to the configured color; EXIF
orientation is not applied (training pipelines do not apply it either). 16-bit and float images
are refused rather than silently clipped to 8 bits. Pillow's decompression-bomb guard stays on and
any image above Image.MAX_IMAGE_PIXELS is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qtool.errors import QtoolError, first_line
from qtool.io.feeds import dims_text
from qtool.io.files import open_regular
from qtool.io.model import InputSpec

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
# The only Pillow decoders ever tried, whatever a file holds: a data file is never handed to
# another plugin (EPS would run Ghostscript on it; TIFF, GIF and the rest are not supported).
IMAGE_FORMATS = ("JPEG", "PNG", "BMP")
FILTERS = ("nearest", "bilinear", "bicubic", "lanczos")
COLORS = {"RGB": 3, "BGR": 3, "GRAY": 1}
LAYOUTS = ("NCHW", "NHWC")
PREPROCESS_KEYS = ("resize", "resize_filter", "crop", "color", "scale", "mean", "std", "layout",
                   "dtype")
# Modes Pillow cannot bring to 8-bit RGB or L without silently clipping the values.
WIDE_MODES = ("I", "F", "I;16", "I;16B", "I;16L", "I;16N")


@dataclass(frozen=True)
class Preprocess:
    """Resolved preprocessing: every choice made, for one model input."""

    resize: int | tuple[int, int] | None
    resize_filter: str
    crop: tuple[int, int] | None
    color: str
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    layout: str
    dtype: np.dtype

    @property
    def channels(self) -> int:
        return COLORS[self.color]

    @property
    def output_hw(self) -> tuple[int, int] | None:
        """Height and width of every output image, when they do not depend on the image."""
        if self.crop is not None:
            return self.crop
        if isinstance(self.resize, tuple):
            return self.resize
        return None

    def describe(self) -> str:
        parts = []
        if self.resize is not None:
            size = self.resize if isinstance(self.resize, int) else "x".join(map(str, self.resize))
            parts.append(f"resize {size} {self.resize_filter}")
        if self.crop is not None:
            parts.append(f"crop {self.crop[0]}x{self.crop[1]}")
        parts.append(self.color)
        if self.scale != 1.0:
            parts.append(f"scale {self.scale:g}")
        if any(m != 0.0 for m in self.mean):
            parts.append("mean " + "/".join(f"{m:g}" for m in self.mean))
        if any(s != 1.0 for s in self.std):
            parts.append("std " + "/".join(f"{s:g}" for s in self.std))
        parts.append(self.layout)
        parts.append(str(self.dtype))
        return ", ".join(parts)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _size(key: str, value) -> int | tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        return (int(value[0]), int(value[1]))
    raise QtoolError(f"[preprocess] {key} must be a positive int or [height, width], got {value!r}")


def _per_channel(key: str, value, positive: bool) -> tuple[float, ...]:
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values or not all(_is_number(v) and math.isfinite(v) for v in values):
        raise QtoolError(f"[preprocess] {key} must be a number or a list of numbers, got {value!r}")
    if positive and not all(v > 0 for v in values):
        raise QtoolError(f"[preprocess] {key} must be positive, got {value!r}")
    return tuple(float(v) for v in values)


def _choice(key: str, value, choices) -> str:
    if isinstance(value, str) and value.upper() in (c.upper() for c in choices):
        return next(c for c in choices if c.upper() == value.upper())
    raise QtoolError(f"[preprocess] {key} must be one of {', '.join(choices)}, got {value!r}")


def check_preprocess(config: dict | None) -> dict:
    """Validate the keys and value types of a [preprocess] table without a model; return it parsed."""
    config = dict(config or {})
    unknown = sorted(set(config) - set(PREPROCESS_KEYS))
    if unknown:
        raise QtoolError(f"unknown [preprocess] key{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(unknown)} (known: {', '.join(PREPROCESS_KEYS)})")
    parsed: dict = {}
    if "resize" in config:
        parsed["resize"] = _size("resize", config["resize"])
    if "crop" in config:
        crop = _size("crop", config["crop"])
        parsed["crop"] = (crop, crop) if isinstance(crop, int) else crop
    if "resize_filter" in config:
        parsed["resize_filter"] = _choice("resize_filter", config["resize_filter"], FILTERS)
    if "color" in config:
        parsed["color"] = _choice("color", config["color"], tuple(COLORS))
    if "layout" in config:
        parsed["layout"] = _choice("layout", config["layout"], LAYOUTS)
    if "scale" in config:
        scale = config["scale"]
        if not (_is_number(scale) and math.isfinite(scale) and scale > 0):
            raise QtoolError(f"[preprocess] scale must be a positive number, got {scale!r}")
        parsed["scale"] = float(scale)
    if "mean" in config:
        parsed["mean"] = _per_channel("mean", config["mean"], positive=False)
    if "std" in config:
        parsed["std"] = _per_channel("std", config["std"], positive=True)
    if "dtype" in config:
        parsed["dtype"] = _dtype(config["dtype"])
    return parsed


def _dtype(value) -> np.dtype:
    try:
        dtype = np.dtype(value) if isinstance(value, str) else None
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in "fiu":
        raise QtoolError(f"[preprocess] dtype must be a numeric type name such as float32, "
                         f"got {value!r}")
    return dtype


def _default_layout(shape: tuple) -> str:
    first, last = shape[1] in (1, 3), shape[3] in (1, 3)
    return "NHWC" if last and not first else "NCHW"


def missing_preprocess_message(path, spec: InputSpec) -> str:
    """Image data without a [preprocess] table: say what the model input expects instead of
    feeding raw pixels at each image's own size."""
    expects = f"{spec.dtype} {dims_text(spec.shape)}"
    if len(spec.shape) == 4:
        layout = _default_layout(spec.shape)
        height, width = spec.shape[2:] if layout == "NCHW" else spec.shape[1:3]
        size = (f"{height}x{width}" if isinstance(height, int) and isinstance(width, int)
                else "height and width not fixed")
        expects += f" ({layout}, {size})"
    return (f"{path} holds images but no [preprocess] table is configured, and input "
            f"'{spec.name}' expects {expects}: add a [preprocess] table (resize, crop, scale, "
            f"mean, std, layout) to the --config file; see \"Input data\" in the README")


def image_preprocess(config: dict | None, spec: InputSpec) -> Preprocess:
    """Resolve a [preprocess] table against the model input it feeds; refuse what cannot fit."""
    parsed = check_preprocess(config)
    if len(spec.shape) != 4:
        raise QtoolError(f"image data needs a 4-D model input (NCHW or NHWC); input '{spec.name}' "
                         f"is {dims_text(spec.shape)}")
    layout = parsed.get("layout") or _default_layout(spec.shape)
    c_axis, h_axis, w_axis = (1, 2, 3) if layout == "NCHW" else (3, 1, 2)
    model_c = spec.shape[c_axis]
    color = parsed.get("color") or ("GRAY" if model_c == 1 else "RGB")
    channels = COLORS[color]
    if isinstance(model_c, int) and model_c != channels:
        raise QtoolError(f"input '{spec.name}' {dims_text(spec.shape)} has {model_c} channel(s) "
                         f"on axis {c_axis} ({layout}) but color {color} gives {channels}; "
                         f"set [preprocess] color or layout")
    mean = parsed.get("mean", (0.0,))
    std = parsed.get("std", (1.0,))
    for key, values in (("mean", mean), ("std", std)):
        if len(values) not in (1, channels):
            raise QtoolError(f"[preprocess] {key} has {len(values)} values; {color} images have "
                             f"{channels} channel(s)")
    dtype = parsed.get("dtype", spec.dtype)
    if dtype != spec.dtype:
        raise QtoolError(f"[preprocess] dtype {dtype} differs from input '{spec.name}' "
                         f"{spec.dtype}; leave dtype unset to use the model's")
    if dtype.kind not in "fiu":
        raise QtoolError(f"input '{spec.name}' is {spec.dtype}; image data gives numbers")
    resize = parsed.get("resize")
    crop = parsed.get("crop")
    model_hw = (spec.shape[h_axis], spec.shape[w_axis])
    if resize is None and crop is None and all(isinstance(d, int) for d in model_hw):
        resize = model_hw
    pre = Preprocess(resize=resize, resize_filter=parsed.get("resize_filter", "bilinear"),
                     crop=crop, color=color, scale=parsed.get("scale", 1.0),
                     mean=mean * channels if len(mean) == 1 else mean,
                     std=std * channels if len(std) == 1 else std, layout=layout, dtype=dtype)
    if isinstance(resize, int) and crop is not None and min(crop) > resize:
        raise QtoolError(f"[preprocess] crop {crop[0]}x{crop[1]} is larger than the resized "
                         f"shorter side {resize}")
    if isinstance(resize, tuple) and crop is not None and (crop[0] > resize[0] or crop[1] > resize[1]):
        raise QtoolError(f"[preprocess] crop {crop[0]}x{crop[1]} is larger than the resized "
                         f"image {resize[0]}x{resize[1]}")
    out = pre.output_hw
    if out is not None:
        for axis, want, got in zip((h_axis, w_axis), model_hw, out):
            if isinstance(want, int) and want != got:
                raise QtoolError(
                    f"preprocessing gives {out[0]}x{out[1]} images but input '{spec.name}' "
                    f"{dims_text(spec.shape)} expects {model_hw[0]}x{model_hw[1]} "
                    f"(axis {axis} in {layout}); fix [preprocess] crop, resize or layout"
                )
    return pre


def _pil():
    from PIL import Image

    return Image


def _filter(name: str):
    resampling = _pil().Resampling
    return {"nearest": resampling.NEAREST, "bilinear": resampling.BILINEAR,
            "bicubic": resampling.BICUBIC, "lanczos": resampling.LANCZOS}[name]


def resized_size(width: int, height: int, resize: int | tuple[int, int]) -> tuple[int, int]:
    """(width, height) after resizing; an int sets the shorter side (torchvision's rule)."""
    if isinstance(resize, tuple):
        return resize[1], resize[0]
    if width <= height:
        return resize, int(resize * height / width)
    return int(resize * width / height), resize


def crop_box(width: int, height: int, crop: tuple[int, int]) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a centre crop; offsets rounded half to even."""
    ch, cw = crop
    top = round((height - ch) / 2.0)
    left = round((width - cw) / 2.0)
    return left, top, left + cw, top + ch


def decode(path: Path, color: str):
    """Open an image file fully decoded in 8-bit RGB or L, or raise one line naming the file."""
    Image = _pil()
    try:
        with open_regular(path) as handle, Image.open(handle, formats=IMAGE_FORMATS) as img:
            limit = Image.MAX_IMAGE_PIXELS
            if limit is not None and img.width * img.height > limit:
                raise QtoolError(f"{path}: image of {img.width}x{img.height} pixels is above the "
                                 f"decompression-bomb limit of {limit} pixels")
            if img.mode in WIDE_MODES:
                raise QtoolError(f"{path}: {img.mode} images (16-bit or float) are not supported; "
                                 f"convert them to 8-bit")
            img.load()
            return img.convert("L" if color == "GRAY" else "RGB")
    except QtoolError:
        raise
    except Image.DecompressionBombError as exc:
        raise QtoolError(f"{path}: refused by the decompression-bomb guard: {exc}") from None
    except Exception as exc:  # UnidentifiedImageError, truncated data (OSError), decoder errors
        raise QtoolError(f"cannot read image {path}: {first_line(exc)}") from None


def load_image(path: Path, pre: Preprocess) -> np.ndarray:
    """One preprocessed sample, without the batch axis: [C, H, W] or [H, W, C]."""
    img = decode(path, pre.color)
    if pre.resize is not None:
        size = resized_size(img.width, img.height, pre.resize)
        if size != img.size:
            img = img.resize(size, resample=_filter(pre.resize_filter))
    if pre.crop is not None:
        if pre.crop[0] > img.height or pre.crop[1] > img.width:
            raise QtoolError(f"{path}: crop {pre.crop[0]}x{pre.crop[1]} is larger than the image "
                             f"({img.height}x{img.width} after resize)")
        img = img.crop(crop_box(img.width, img.height, pre.crop))
    pixels = np.asarray(img)
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
    if pre.color == "BGR":
        pixels = pixels[:, :, ::-1]
    work = np.float64 if pre.dtype == np.float64 else np.float32
    x = pixels.astype(work)
    if pre.scale != 1.0:
        x *= work(pre.scale)
    if any(m != 0.0 for m in pre.mean):
        x -= np.asarray(pre.mean, dtype=work)
    if any(s != 1.0 for s in pre.std):
        x /= np.asarray(pre.std, dtype=work)
    if pre.dtype.kind in "iu":
        info = np.iinfo(pre.dtype)
        x = np.clip(np.rint(x), info.min, info.max)
    x = x.astype(pre.dtype, copy=False)
    if pre.layout == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x)
