"""Box F1 at IoU 0.5 of a YOLO-style detector (YOLOv8 head layout) against the reference model:

    qtool compare model.onnx model.int8.onnx --data val/ --metric-script examples/metrics/yolo_box_f1.py \\
        --min-metric box_f1=0.9

The output [batch, 4 + classes, anchors] holds per anchor the box centre, width and height, then
one score per class. Each model's boxes are decoded the same way: best class per anchor, score
threshold, then greedy non-maximum suppression (per class, as ultralytics does by default). The reference's boxes are the ground
truth (boxes.py). Edit the constants for your model.
"""

import numpy as np
from boxes import BoxF1, iou_matrix

OUTPUT = None          # the output to decode; None: the model's first output
SCORE_THRESHOLD = 0.25
NMS_IOU = 0.45
NMS_PER_CLASS = True   # False: a box suppresses overlapping boxes of every class
MATCH_IOU = 0.5

counts = BoxF1(MATCH_IOU)


def decode(head: np.ndarray):
    """One image's [4 + classes, anchors] head -> (boxes [n, 4], classes [n], scores [n])."""
    rows = np.asarray(head, dtype=np.float64).T
    classes = rows[:, 4:].argmax(axis=1)
    scores = rows[:, 4:].max(axis=1)
    keep = np.flatnonzero(scores >= SCORE_THRESHOLD)
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    cx, cy, w, h = rows[keep, :4].T
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    chosen = []
    for i in range(len(keep)):
        rivals = [j for j in chosen
                  if not NMS_PER_CLASS or classes[keep[j]] == classes[keep[i]]]
        if not rivals or iou_matrix(boxes[i], boxes[rivals]).max() < NMS_IOU:
            chosen.append(i)
    return boxes[chosen], classes[keep[chosen]], scores[keep[chosen]]


def update(reference, candidate):
    name = OUTPUT or next(iter(reference))
    for ref_head, cand_head in zip(reference[name], candidate[name]):
        ref_boxes, ref_classes, _ = decode(ref_head)
        counts.add(ref_boxes, ref_classes, *decode(cand_head))


def result():
    return counts.result()
