"""The accuracy matrix's task metrics: each INT8 model's outputs against FP32's on the
evaluation split (agreement, text, boxes, cosine, speech decisions), and silent breakage."""

from __future__ import annotations

import json
from pathlib import Path

import bench_data
import bench_metrics
import numpy as np
from matrix_inputs import read_split
from matrix_sources import SPECS


def edit_distance(a, b) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def components_boxes(prob: np.ndarray, thresh: float = 0.3, box_thresh: float = 0.5):
    """DB post-processing, axis-aligned: probability > 0.3, 4-connected components, boxes of at
    least 3 px whose mean probability reaches 0.5 (PP-OCR's box_thresh)."""
    labels = bench_data.label_components(prob > thresh)
    boxes = []
    for label in np.unique(labels[labels >= 0]):
        rows, cols = np.nonzero(labels == label)
        if np.ptp(rows) + 1 < 3 or np.ptp(cols) + 1 < 3 or prob[rows, cols].mean() < box_thresh:
            continue
        boxes.append((float(cols.min()), float(rows.min()), float(cols.max() + 1),
                      float(rows.max() + 1), 0))
    return boxes


def iou(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def match_counts(ref: list, out: list, threshold: float = 0.5) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) of `out` against `ref`: greedy
    one-to-one matching of same-class boxes at IoU >= threshold (box[4] is the class)."""
    used = set()
    tp = 0
    for box in out:
        best, best_iou = None, threshold
        for j, other in enumerate(ref):
            if j in used or other[4] != box[4]:
                continue
            value = iou(box, other)
            if value >= best_iou:
                best, best_iou = j, value
        if best is not None:
            used.add(best)
            tp += 1
    return tp, len(out) - tp, len(ref) - tp


def f1_of(pairs) -> float | None:
    tp = fp = fn = 0
    for ref, out in pairs:
        a, b, c = match_counts(ref, out)
        tp, fp, fn = tp + a, fp + b, fn + c
    if tp + fp + fn == 0:
        return None  # no box anywhere: nothing to compare
    return 2 * tp / (2 * tp + fp + fn)


def yolo_boxes(output: np.ndarray, score: float = 0.25, nms: float = 0.45):
    """NudeNet's post-processing of [1, 4 + classes, anchors]: best class per anchor, score
    threshold, class-agnostic NMS at IoU 0.45 (as cv2.dnn.NMSBoxes there)."""
    rows = output[0].T
    scores = rows[:, 4:].max(1)
    keep = np.nonzero(scores >= score)[0]
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    chosen = []
    for i in keep:
        cx, cy, w, h = rows[i, :4]
        box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, int(rows[i, 4:].argmax()))
        if all(iou(box, other) < nms for other in chosen):
            chosen.append(box)
    return chosen


def task_metrics(kind: str, spec_extra: dict, meta: dict, ref: list[list[np.ndarray]],
                 out: list[list[np.ndarray]]) -> dict:
    """The task metric of one INT8 model against FP32 on the evaluation split: `metric` (the
    headline number, higher is better, a fraction) and details."""
    first_ref = [r[0] for r in ref]
    first_out = [o[0] for o in out]
    if kind == "classify":
        a = np.concatenate([x.reshape(len(x), -1) for x in first_ref])
        b = np.concatenate([x.reshape(len(x), -1) for x in first_out])
        agree = a.argmax(1) == b.argmax(1)
        result = {"metric": float(agree.mean()), "name": "top-1 agree"}
        if meta.get("labels"):
            labels = np.array(meta["labels"])
            ordered = np.sort(a, axis=1)
            margin = ordered[:, -1] - ordered[:, -2]
            result.update(top1_fp32=float(np.mean(a.argmax(1) == labels)),
                          top1=float(np.mean(b.argmax(1) == labels)),
                          confident_flips=int(np.sum(~agree & (margin > 0.5))))
        return result
    if kind == "ctc":
        if spec_extra.get("time_major"):
            first_ref = [x.transpose(1, 0, 2) for x in first_ref]
            first_out = [x.transpose(1, 0, 2) for x in first_out]
        texts_ref = [t for x in first_ref for t in bench_metrics.ctc_greedy(x)]
        texts_out = [t for x in first_out for t in bench_metrics.ctc_greedy(x)]
        same = np.mean([x == y for x, y in zip(texts_ref, texts_out)])
        errors = sum(edit_distance(x, y) for x, y in zip(texts_ref, texts_out))
        chars = sum(len(x) for x in texts_ref)
        return {"metric": float(same), "name": "same text",
                "cer": errors / max(1, chars), "chars": chars}
    if kind == "db":
        pairs = [(components_boxes(r[0, 0]), components_boxes(o[0, 0]))
                 for r, o in zip(first_ref, first_out)]
        return {"metric": f1_of(pairs), "name": "box F1",
                "boxes_fp32": sum(len(p[0]) for p in pairs)}
    if kind == "yolo":
        pairs = [(yolo_boxes(r), yolo_boxes(o)) for r, o in zip(first_ref, first_out)]
        return {"metric": f1_of(pairs), "name": "box F1",
                "boxes_fp32": sum(len(p[0]) for p in pairs)}
    if kind == "embed":
        a = np.concatenate(first_ref).astype(np.float64)
        b = np.concatenate(first_out).astype(np.float64)
        cos = np.sum(a * b, 1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1),
                                            1e-30)
        return {"metric": float(cos.mean()), "name": "cosine", "min_cosine": float(cos.min())}
    if kind == "vad":
        a = np.concatenate([x.ravel() for x in first_ref]) > 0.5
        b = np.concatenate([x.ravel() for x in first_out]) > 0.5
        return {"metric": float(np.mean(a == b)), "name": "speech agree",
                "speech_share_fp32": float(a.mean())}
    raise KeyError(kind)


def broken_reason(ref: list[list[np.ndarray]], out: list[list[np.ndarray]]) -> str:
    """Why an INT8 model's outputs are silently broken (empty when they look alive): NaN or Inf,
    all zero, or the same value for every sample where FP32's outputs vary."""
    for k in range(len(ref[0])):
        a = np.concatenate([r[k].ravel() for r in ref]).astype(np.float64)
        b = np.concatenate([o[k].ravel() for o in out]).astype(np.float64)
        if not np.all(np.isfinite(b)):
            return f"output {k}: NaN/Inf"
        if np.any(a != 0) and np.all(b == 0):
            return f"output {k}: all zero"
        if np.ptp(a) > 0 and np.ptp(b) == 0:
            return f"output {k}: constant"
        if len(ref) > 1 and a.size == b.size:
            per_ref = np.stack([r[k].ravel() for r in ref]) if _same_shapes(ref, k) else None
            per_out = np.stack([o[k].ravel() for o in out]) if _same_shapes(out, k) else None
            if per_ref is not None and per_out is not None \
                    and np.ptp(per_ref, axis=0).max() > 0 and np.ptp(per_out, axis=0).max() == 0:
                return f"output {k}: identical for every input"
    return ""


def _same_shapes(outputs: list[list[np.ndarray]], k: int) -> bool:
    return len({o[k].shape for o in outputs}) == 1


def run_outputs(model: str, samples: list[dict]) -> list[list[np.ndarray]]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return [session.run(None, {n: s[n] for n in names}) for s in samples]


def evaluate(spec_path: Path) -> dict:
    """FP32 and every INT8 model of one matrix row set on the evaluation split."""
    spec = json.loads(spec_path.read_text())
    model_spec = SPECS[spec["key"]]
    samples = read_split(Path(spec["eval"]))
    meta = json.loads(Path(spec["meta"]).read_text())
    ref = run_outputs(spec["fp32"], samples)
    results = {}
    for row, path in spec["models"].items():
        try:
            out = run_outputs(path, samples)
        except Exception as error:  # a model onnxruntime cannot run is that row's result
            results[row] = {"error": f"onnxruntime: {str(error).splitlines()[0][:300]}"}
            continue
        sqnr = [bench_metrics.sqnr_db(np.concatenate([r[k].ravel() for r in ref]),
                                      np.concatenate([o[k].ravel() for o in out]))
                for k in range(len(ref[0]))]
        finite = [min(s, 200.0) for s in sqnr]
        results[row] = {"sqnr_db": sqnr, "mean_sqnr_db": float(np.mean(finite)),
                        "broken": broken_reason(ref, out),
                        **task_metrics(model_spec.kind, model_spec.extra, meta, ref, out)}
    fp32 = {}
    if meta.get("labels"):
        labels = np.array(meta["labels"])
        logits = np.concatenate([r[0] for r in ref])
        fp32["top1"] = float(np.mean(logits.argmax(1) == labels))
    return {"samples": len(samples), "fp32": fp32, "rows": results}
