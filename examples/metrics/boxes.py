"""Box matching shared by the detector metric scripts beside it (a metric script may import
modules from its own folder).

Boxes are [x1, y1, x2, y2] rows. The reference model's boxes are the ground truth: candidate
boxes are matched to them one to one, highest score first, each to the unmatched reference box
of the same class with the highest IoU, if that IoU reaches the threshold (ties to the lower
index). Matched: true positives; unmatched candidate boxes: false positives; unmatched reference
boxes: false negatives.
"""

import numpy as np


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a [n, 4] with every box in b [m, 4] -> [n, m]."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    width = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    height = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(width, 0, None) * np.clip(height, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_counts(ref_boxes, ref_classes, cand_boxes, cand_classes, cand_scores,
                 threshold: float = 0.5) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) of one image."""
    ious = iou_matrix(cand_boxes, ref_boxes)
    ious[np.asarray(cand_classes)[:, None] != np.asarray(ref_classes)[None, :]] = -1.0
    taken = np.zeros(ious.shape[1], dtype=bool)
    tp = 0
    for row in np.argsort(-np.asarray(cand_scores, dtype=np.float64), kind="stable"):
        candidates = np.where(taken, -1.0, ious[row])
        if candidates.size and candidates.max() >= threshold:
            taken[int(candidates.argmax())] = True
            tp += 1
    return tp, len(ious) - tp, ious.shape[1] - tp


class BoxF1:
    """Running true/false positive counts -> precision, recall and F1 of the candidate's boxes."""

    def __init__(self, threshold: float = 0.5):
        self.threshold = threshold
        self.tp = self.fp = self.fn = 0

    def add(self, ref_boxes, ref_classes, cand_boxes, cand_classes, cand_scores) -> None:
        tp, fp, fn = match_counts(ref_boxes, ref_classes, cand_boxes, cand_classes, cand_scores,
                                  self.threshold)
        self.tp, self.fp, self.fn = self.tp + tp, self.fp + fp, self.fn + fn

    def result(self) -> dict:
        """Both models finding no box at all is full agreement: every number is 1."""
        tp, fp, fn = self.tp, self.fp, self.fn
        return {
            "box_precision": tp / (tp + fp) if tp + fp else 1.0,
            "box_recall": tp / (tp + fn) if tp + fn else 1.0,
            "box_f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0,
            "reference_boxes": tp + fn,
            "candidate_boxes": tp + fp,
        }
