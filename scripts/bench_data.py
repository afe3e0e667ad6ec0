"""Calibration and evaluation sets for scripts/bench.py, built from the real files in models/.

Every tool reads the same files through the same reader (qtool.io.data.open_data with the same
[preprocess] table), so "the same preprocessed samples" holds by construction.

  ImageNet photos   models/imagenet200: sorted by file name, even positions (0, 2, ...) calibrate,
                    odd positions are held out; labels from labels.txt.
  OCR text crops    text lines found by the FP32 PP-OCRv4 detector in the ImageNet photos and the
                    scikit-image samples, cut from the original image and preprocessed the way
                    PP-OCR does (height 48, aspect kept, padded on the right); crops of
                    even-position ImageNet photos calibrate, the others are held out. Built once
                    and cached (the detector pass takes about a minute).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
IMAGENET_PREPROCESS = {"resize": 256, "resize_filter": "bicubic", "crop": 224, "color": "RGB",
                       "mean": [127.0, 127.0, 127.0], "std": [128.0, 128.0, 128.0], "layout": "NCHW"}
# PP-OCR normalisation: (pixel / 255 - 0.5) / 0.5 on BGR pixels.
PPOCR_MEAN_STD = {"mean": [127.5, 127.5, 127.5], "std": [127.5, 127.5, 127.5]}


def det_preprocess(size: int) -> dict:
    """A fixed square input for the detector (PP-OCR needs multiples of 32), so batches stack."""
    return {"resize": [size, size], "resize_filter": "bilinear", "color": "BGR",
            **PPOCR_MEAN_STD, "layout": "NCHW"}


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def read_labels(folder: Path) -> dict[str, int]:
    """labels.txt: `<file> <class index>` per line."""
    labels = {}
    for line in (folder / "labels.txt").read_text().splitlines():
        if line.strip():
            name, index = line.split()
            labels[name] = int(index)
    return labels


def split_even_odd(items: list) -> tuple[list, list]:
    return items[0::2], items[1::2]


def link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def fresh_dir(folder: Path) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def folder_of(files: list[Path], folder: Path, count: int | None = None) -> Path:
    """A folder holding `count` files (default: each once), repeating the list in order when
    count is larger. Names are prefixed with their position so the sorted order is the list's
    order and repeats do not collide; a file's own name follows the prefix."""
    fresh_dir(folder)
    count = len(files) if count is None else count
    for index in range(count):
        src = files[index % len(files)]
        link(src, folder / f"{index:05d}_{src.name}")
    return folder


def original_name(path: Path) -> str:
    """The source file name of a file placed by folder_of."""
    return path.name.split("_", 1)[1]


# ---------------------------------------------------------------------------- OCR text crops

DET_LIMIT = 960        # longest side given to the detector when finding text (no upscaling)
DET_THRESH = 0.3       # PP-OCR's DB post-processing defaults
BOX_THRESH = 0.5
UNCLIP_RATIO = 1.6
MIN_BOX_SIDE = 3
REC_SHAPE = (48, 320)  # PP-OCRv4 recognizer input (height, width)
CLS_SHAPE = (48, 192)  # direction classifier input


def det_input(rgb: np.ndarray, limit: int = DET_LIMIT) -> np.ndarray:
    """One detector input [1, 3, H, W] for an RGB image: longest side at most `limit`, both sides
    rounded to multiples of 32, BGR, PP-OCR normalisation."""
    from PIL import Image

    height, width = rgb.shape[:2]
    ratio = min(1.0, limit / max(height, width))
    new_h = max(32, round(height * ratio / 32) * 32)
    new_w = max(32, round(width * ratio / 32) * 32)
    resized = np.asarray(Image.fromarray(rgb).resize((new_w, new_h), Image.Resampling.BILINEAR))
    x = resized[:, :, ::-1].astype(np.float32)
    x = (x / 255.0 - 0.5) / 0.5
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def dilate_2x2(mask: np.ndarray) -> np.ndarray:
    """Binary dilation with a 2x2 square anchored at the top-left, as PP-OCR's DB post-process."""
    out = mask.copy()
    out[1:, :] |= mask[:-1, :]
    out[:, 1:] |= mask[:, :-1]
    out[1:, 1:] |= mask[:-1, :-1]
    return out


def label_components(mask: np.ndarray) -> np.ndarray:
    """4-connected components of a boolean image: every pixel of a component gets the flat index
    of the component's first pixel, background gets -1. Label propagation (each pixel takes the
    smallest label among itself and its neighbours) with pointer jumping, all in numpy."""
    height, width = mask.shape
    flat = mask.ravel()
    big = height * width
    labels = np.where(flat, np.arange(big), big)
    while True:
        grid = labels.reshape(height, width)
        low = grid.copy()
        np.minimum(low[1:, :], grid[:-1, :], out=low[1:, :])
        np.minimum(low[:-1, :], grid[1:, :], out=low[:-1, :])
        np.minimum(low[:, 1:], grid[:, :-1], out=low[:, 1:])
        np.minimum(low[:, :-1], grid[:, 1:], out=low[:, :-1])
        low = np.where(flat, low.ravel(), big)
        on = low < big
        low[on] = low[low[on]]  # jump to the label's own label: long chains collapse fast
        if np.array_equal(low, labels):
            break
        labels = low
    return np.where(flat, labels, -1).reshape(height, width)


def text_boxes(prob: np.ndarray, image_hw: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """Axis-aligned text boxes (top, bottom, left, right) in image pixels from a detector
    probability map [H, W]: threshold, dilate, connected components, mean-score filter, then
    grow each box by area * ratio / perimeter as PP-OCR's unclip does."""
    labels = label_components(dilate_2x2(prob > DET_THRESH))
    scale_y, scale_x = image_hw[0] / prob.shape[0], image_hw[1] / prob.shape[1]
    boxes = []
    for label in np.unique(labels[labels >= 0]):
        rows, cols = np.nonzero(labels == label)
        r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        if min(r1 - r0, c1 - c0) < MIN_BOX_SIDE:
            continue
        if prob[rows, cols].mean() < BOX_THRESH:
            continue
        top, bottom, left, right = r0 * scale_y, r1 * scale_y, c0 * scale_x, c1 * scale_x
        h, w = bottom - top, right - left
        grow = h * w * UNCLIP_RATIO / (2 * (h + w))
        box = (max(0, int(top - grow)), min(image_hw[0], math.ceil(bottom + grow)),
               max(0, int(left - grow)), min(image_hw[1], math.ceil(right + grow)))
        if box[1] - box[0] >= MIN_BOX_SIDE and box[3] - box[2] >= box[1] - box[0]:
            boxes.append(box)  # horizontal lines only: PP-OCR rotates the others first
    return boxes


def line_sample(crop_rgb: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """PP-OCR's recognizer/classifier input for one text crop: height fixed, width by aspect
    (at most the input width), BGR, normalised, zero-padded on the right: [1, 3, H, W]."""
    from PIL import Image

    height, width = shape
    crop_h, crop_w = crop_rgb.shape[:2]
    new_w = min(width, math.ceil(height * crop_w / crop_h))
    resized = np.asarray(Image.fromarray(crop_rgb).resize((new_w, height), Image.Resampling.BILINEAR))
    x = (resized[:, :, ::-1].astype(np.float32) / 255.0 - 0.5) / 0.5
    sample = np.zeros((1, 3, height, width), dtype=np.float32)
    sample[0, :, :, :new_w] = x.transpose(2, 0, 1)
    return sample


def load_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


@dataclass
class CropSets:
    rec_calib: Path
    rec_eval: Path
    cls_calib: Path
    cls_eval: Path
    counts: dict


def _fingerprint(det_model: Path, calib_images: list[Path], eval_images: list[Path]) -> str:
    digest = hashlib.sha256(det_model.read_bytes())
    for path in calib_images + [Path("|")] + eval_images:
        digest.update(path.name.encode() + b"\0")
    digest.update(json.dumps([DET_LIMIT, DET_THRESH, BOX_THRESH, UNCLIP_RATIO, REC_SHAPE,
                              CLS_SHAPE]).encode())
    return digest.hexdigest()


def ocr_crop_sets(det_model: Path, calib_images: list[Path], eval_images: list[Path],
                  cache: Path, log=print) -> CropSets:
    """Text-line samples for the recognizer and the classifier, one .npy file per crop, cached
    in `cache` and rebuilt only when the detector, the image lists or the settings change."""
    stamp = cache / "crops.json"
    key = _fingerprint(det_model, calib_images, eval_images)
    dirs = {name: cache / name for name in ("rec_calib", "rec_eval", "cls_calib", "cls_eval")}
    if stamp.is_file():
        saved = json.loads(stamp.read_text())
        if saved.get("key") == key:
            return CropSets(**dirs, counts=saved["counts"])

    import onnxruntime as ort

    log(f"finding text lines with the FP32 detector in {len(calib_images) + len(eval_images)} "
        f"images (cached in {cache})")
    session = ort.InferenceSession(str(det_model), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    for folder in dirs.values():
        fresh_dir(folder)
    counts = {}
    for split, images in (("calib", calib_images), ("eval", eval_images)):
        written = 0
        for path in images:
            rgb = load_rgb(path)
            prob = session.run(None, {input_name: det_input(rgb)})[0][0, 0]
            for top, bottom, left, right in text_boxes(prob, rgb.shape[:2]):
                crop = np.ascontiguousarray(rgb[top:bottom, left:right])
                name = f"{written:05d}_{path.stem}.npy"
                np.save(dirs[f"rec_{split}"] / name, line_sample(crop, REC_SHAPE))
                np.save(dirs[f"cls_{split}"] / name, line_sample(crop, CLS_SHAPE))
                written += 1
        counts[split] = written
    stamp.write_text(json.dumps({"key": key, "counts": counts}))
    return CropSets(**dirs, counts=counts)


def ocr_crop_sets_in_child(det_model: Path, calib_images: list[Path], eval_images: list[Path],
                           cache: Path) -> CropSets:
    """ocr_crop_sets in a child process. The detector would grow this process, and Linux carries
    a process's peak RSS across exec into every child started after that (ru_maxrss), so each
    later measurement would read at least this process's size."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(ocr_crop_sets, det_model, calib_images, eval_images, cache,
                           _log_to_stderr).result()


def _log_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def npy_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.npy"))
