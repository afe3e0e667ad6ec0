"""Accuracy of a quantized model's outputs against the FP32 model's, pure numpy."""

from __future__ import annotations

import math

import numpy as np


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio over all elements: 10 log10(sum ref^2 / sum err^2)."""
    ref = np.asarray(reference, dtype=np.float64)
    noise = float(np.sum((ref - np.asarray(test, dtype=np.float64)) ** 2))
    signal = float(np.sum(ref ** 2))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def mean_cosine(reference: np.ndarray, test: np.ndarray) -> float:
    """Cosine similarity of each sample's flattened output (first axis = samples), averaged."""
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    out = np.asarray(test, dtype=np.float64).reshape(len(test), -1)
    dots = np.sum(ref * out, axis=1)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0),
                   np.where(np.all(ref == out, axis=1), 1.0, 0.0))
    return float(np.mean(cos))


def top1_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def top1_agreement(reference: np.ndarray, test: np.ndarray) -> float:
    """Fraction of samples whose top-1 class is the same in both models."""
    return float(np.mean(np.argmax(reference, axis=-1) == np.argmax(test, axis=-1)))


def ctc_greedy(probs: np.ndarray) -> list[tuple[int, ...]]:
    """Greedy CTC decoding of [N, T, C] class scores, blank = class 0 (PP-OCR's convention):
    best class per step, repeats merged, blanks dropped; one index sequence per sample."""
    best = np.argmax(probs, axis=-1)
    decoded = []
    for row in best:
        keep = np.ones(len(row), dtype=bool)
        keep[1:] = row[1:] != row[:-1]
        decoded.append(tuple(int(c) for c in row[keep & (row != 0)]))
    return decoded


def text_agreement(reference: np.ndarray, test: np.ndarray) -> float:
    """Fraction of text lines read exactly the same (greedy CTC) by both models."""
    a, b = ctc_greedy(reference), ctc_greedy(test)
    return float(np.mean([x == y for x, y in zip(a, b)]))


def mask_iou(reference: np.ndarray, test: np.ndarray, threshold: float) -> float:
    """Intersection over union of the text masks (probability > threshold), all images pooled."""
    ref, out = np.asarray(reference) > threshold, np.asarray(test) > threshold
    union = int(np.count_nonzero(ref | out))
    return 1.0 if union == 0 else int(np.count_nonzero(ref & out)) / union
