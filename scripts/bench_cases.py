"""The models of scripts/bench.py and the data each is calibrated and evaluated on."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import bench_data as data

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


@dataclass
class Case:
    """One model in the benchmark and the data it is calibrated and evaluated on."""

    key: str
    title: str
    model: Path
    task: str                    # classify | detect | recognize | direction
    preprocess: dict | None      # [preprocess] table for image files; None for .npy samples
    calib_pool: list[Path]       # calibration samples, one file each, in order
    eval_files: list[Path]       # evaluation samples
    describe: str                # what exactly is calibrated and evaluated on
    labels: dict = field(default_factory=dict)
    heldout: list[str] = field(default_factory=list)
    sweep_pool: list[Path] = field(default_factory=list)


def build_cases(args, log) -> list[Case]:
    cases = []
    imagenet = MODELS_DIR / "imagenet200"
    photos = data.image_files(imagenet) if imagenet.is_dir() else []
    even, odd = data.split_even_odd(photos)
    effnet = MODELS_DIR / "efficientnet_lite0.onnx"
    if "efficientnet_lite0" in args.models and effnet.is_file() and photos:
        cases.append(Case(
            "efficientnet_lite0", "EfficientNet-Lite0 (ImageNet classifier)", effnet, "classify",
            data.IMAGENET_PREPROCESS, even, photos,
            f"calibration pool: the {len(even)} even-position ImageNet photos (sorted by name), "
            f"taken in order; "
            f"accuracy: top-1 vs labels and top-1 agreement with FP32 on the {len(odd)} "
            f"odd-position (held-out) photos, and agreement on all {len(photos)}",
            labels=data.read_labels(imagenet), heldout=[p.name for p in odd],
            sweep_pool=even + odd))
    elif "efficientnet_lite0" in args.models:
        log(f"skipping EfficientNet-Lite0: no {effnet} or {imagenet} (run scripts/fetch_models.sh)")

    ocr = MODELS_DIR / "ppocr"
    det = ocr / "ch_PP-OCRv4_det_infer.onnx"
    samples = MODELS_DIR / "images" / "skimage"
    wanted = {"ppocr_det", "ppocr_rec", "ppocr_cls"} & set(args.models)
    if wanted and not (det.is_file() and photos and samples.is_dir()):
        log("skipping the PP-OCR models: run scripts/fetch_models.sh (needs ../shared/assets too)")
        return cases
    extra = data.image_files(samples) if samples.is_dir() else []
    if "ppocr_det" in args.models:
        cases.append(Case(
            "ppocr_det", f"PP-OCRv4 text detection ({args.det_size}x{args.det_size} input)", det,
            "detect", data.det_preprocess(args.det_size), even, odd + extra,
            f"calibration pool: the {len(even)} even-position ImageNet photos; accuracy: output "
            f"probability maps vs FP32 on the {len(odd)} odd-position photos and the "
            f"{len(extra)} scikit-image sample images (a scanned page, text, photos)"))
    if {"ppocr_rec", "ppocr_cls"} & set(args.models):
        crops = data.ocr_crop_sets_in_child(det, even, odd + extra, args.workdir / "ocr_crops")
        for key, model, task, calib, evaluate, shape in (
                ("ppocr_rec", "ch_PP-OCRv4_rec_infer.onnx", "recognize", crops.rec_calib,
                 crops.rec_eval, data.REC_SHAPE),
                ("ppocr_cls", "ch_ppocr_mobile_v2.0_cls_infer.onnx", "direction", crops.cls_calib,
                 crops.cls_eval, data.CLS_SHAPE)):
            if key not in args.models:
                continue
            title = ("PP-OCRv4 text recognition" if task == "recognize"
                     else "PP-OCR text direction classifier")
            cases.append(Case(
                key, f"{title} ({shape[0]}x{shape[1]} text lines)", ocr / model, task, None,
                data.npy_files(calib), data.npy_files(evaluate),
                f"text lines found by the FP32 detector and cut from the photos: calibration pool: "
                f"crops of the even-position ImageNet photos ({crops.counts['calib']} crops); "
                f"accuracy vs FP32 on the {crops.counts['eval']} crops of the odd-position photos "
                f"and the scikit-image samples"))
    return cases
