"""Box F1 at IoU 0.5 of a DB-style text detector (PP-OCR det) against the reference model:

    qtool compare det.onnx det.int8.onnx --data val/ --metric-script examples/metrics/db_box_f1.py \\
        --min-metric box_f1=0.95

The output [batch, 1, height, width] is a text probability map. Each model's map is turned into
boxes the same way: probability > 0.3, 4-connected components, the bounding box of each component
with sides of at least 3 pixels and a mean probability of at least 0.6. The reference's boxes are
the ground truth (boxes.py). Edit the constants for your model.
"""

import numpy as np
from boxes import BoxF1

OUTPUT = None          # the output to read; None: the model's first output
THRESHOLD = 0.3        # pixel is text
BOX_THRESHOLD = 0.6    # mean probability a component needs to count as a box (PaddleOCR's
                       # default; rapidocr uses 0.5)
MIN_SIDE = 3           # pixels
MATCH_IOU = 0.5

counts = BoxF1(MATCH_IOU)


def runs(mask: np.ndarray):
    """The runs of set pixels of a boolean [H, W] mask: (row, start, end) arrays, row-major."""
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)
    rows, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)
    return rows, starts, ends


def components(rows, starts, ends, height: int) -> np.ndarray:
    """4-connected components: runs on adjacent rows whose columns overlap are joined (union-find).
    Returns each run's component id."""
    parent = list(range(len(rows)))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first = np.searchsorted(rows, np.arange(height + 1))  # index of each row's first run
    for row in range(1, height):
        j, above_end = int(first[row - 1]), int(first[row])
        for i in range(int(first[row]), int(first[row + 1])):  # both rows sorted by column
            while j < above_end and ends[j] <= starts[i]:
                j += 1
            k = j
            while k < above_end and starts[k] < ends[i]:
                parent[root(k)] = root(i)
                k += 1
    return np.array([root(i) for i in range(len(rows))], dtype=np.int64)


def text_boxes(prob: np.ndarray) -> np.ndarray:
    """One [H, W] probability map -> boxes [n, 4] (x1, y1, x2, y2; pixel edges)."""
    prob = np.asarray(prob, dtype=np.float64)
    rows, starts, ends = runs(prob > THRESHOLD)
    ids = components(rows, starts, ends, prob.shape[0])
    cumulative = np.concatenate([np.zeros((prob.shape[0], 1)), prob.cumsum(axis=1)], axis=1)
    run_sums = cumulative[rows, ends] - cumulative[rows, starts]
    boxes = []
    for component in np.unique(ids):
        member = ids == component
        top, bottom = rows[member].min(), rows[member].max() + 1
        left, right = starts[member].min(), ends[member].max()
        if bottom - top < MIN_SIDE or right - left < MIN_SIDE:
            continue
        if run_sums[member].sum() / (ends[member] - starts[member]).sum() >= BOX_THRESHOLD:
            boxes.append((left, top, right, bottom))
    return np.array(boxes, dtype=np.float64).reshape(-1, 4)


def update(reference, candidate):
    name = OUTPUT or next(iter(reference))
    for ref_map, cand_map in zip(reference[name], candidate[name]):
        ref_boxes = text_boxes(ref_map.reshape(ref_map.shape[-2:]))
        cand_boxes = text_boxes(cand_map.reshape(cand_map.shape[-2:]))
        # one class, and every box the same score: matched in order, as found
        counts.add(ref_boxes, np.zeros(len(ref_boxes)), cand_boxes, np.zeros(len(cand_boxes)),
                   np.zeros(len(cand_boxes)))


def result():
    return counts.result()
