"""Hand-made sequence outputs for the sequence metrics and `qtool compare` on sequences."""

from __future__ import annotations

import numpy as np

# Hand-made [2 samples, 4 positions, 3 classes]; every value exact in binary.
# reference argmax [1, 1, 0, 2] -> CTC (blank 0) [1, 2]; [2, 0, 2, 1] -> [2, 2, 1]
REFERENCE = np.array([
    [[0.125, 0.75, 0.125], [0.25, 0.5, 0.25], [0.75, 0.125, 0.125], [0.0, 0.25, 0.75]],
    [[0.25, 0.0, 0.75], [0.5, 0.125, 0.375], [0.125, 0.125, 0.75], [0.25, 0.5, 0.25]],
], dtype=np.float32)
# candidate argmax [1, 0, 0, 2] -> [1, 2] (same); [2, 2, 2, 1] -> [2, 1] (one deletion)
CANDIDATE = np.array([
    [[0.25, 0.5, 0.25], [0.5, 0.25, 0.25], [0.5, 0.25, 0.25], [0.25, 0.25, 0.5]],
    [[0.25, 0.25, 0.5], [0.25, 0.25, 0.5], [0.25, 0.25, 0.5], [0.25, 0.5, 0.25]],
], dtype=np.float32)
