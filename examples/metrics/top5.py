"""Top-5 agreement of a classifier with the reference model:

    qtool compare model.onnx model.int8.onnx --data val/ --metric-script examples/metrics/top5.py \\
        --min-metric top5_contains_reference_top1_percent=99.5

For scores [batch, classes]: how often the candidate's top 5 contain the reference's top-1
class, and how much of the reference's top 5 the candidate's top 5 share (both in percent).
Classes are ranked by score, ties to the lower index (as argmax).
"""

import numpy as np

OUTPUT = None  # the scores to rank; None: the model's first output
K = 5

samples = 0
contains = 0   # samples whose candidate top K hold the reference's top-1
shared = 0     # classes in both top Ks, summed
slots = 0      # classes in the reference's top Ks, summed


def top_k(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores).reshape(len(scores), -1)
    return np.argsort(-scores, axis=1, kind="stable")[:, :K]


def update(reference, candidate):
    global samples, contains, shared, slots
    name = OUTPUT or next(iter(reference))
    ref_top, cand_top = top_k(reference[name]), top_k(candidate[name])
    samples += len(ref_top)
    slots += ref_top.size
    contains += int(np.count_nonzero((cand_top == ref_top[:, :1]).any(axis=1)))
    shared += int(sum(len(np.intersect1d(a, b)) for a, b in zip(ref_top, cand_top)))


def result():
    return {"top5_contains_reference_top1_percent": 100.0 * contains / samples if samples else 0.0,
            "top5_overlap_percent": 100.0 * shared / slots if slots else 0.0}
