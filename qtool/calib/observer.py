"""The statistics calibration collects, behind one interface, and which output feeds each.

The statistics are AbsHistogram (|x| of a tensor taken out of onnxruntime), ChannelMean (a
tensor's channel means, from the tensor or, update_pooled, from its GlobalAveragePool output) and
PooledMax (max|x| from a GlobalMaxPool output). The collection loop sees each as one Observation:
an update taking one run's value, and the session output that value comes from. Observers makes
the observations of each session, so the loop only runs sessions and hands values over.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from qtool.calib.channelmean import ChannelMean
from qtool.calib.histogram import AbsHistogram
from qtool.calib.pooled import PooledMax

Update = Callable[[np.ndarray], None]  # a statistic of one tensor, fed one run's value at a time


@dataclass(frozen=True)
class Observation:
    """One observer's update and the session output whose value it counts."""

    update: Update
    output: str


@dataclass
class SessionObservations:
    """What one session's runs feed: maxima at once (they are tiny, and the next batch needs them
    to know whether it must be pooled), histograms every counted batch, channel means only in
    the batches they are taken from."""

    at_once: list[Observation] = field(default_factory=list)
    every_batch: list[Observation] = field(default_factory=list)
    means_batches: list[Observation] = field(default_factory=list)


class Observers:
    """Every statistic of one calibration pass: an |x| histogram per histogrammed tensor, channel
    means (numpy's or pooled) and the pooled maxima of max-only tensors with their bounds."""

    def __init__(self, tensors: list[str], bins: int, mean_axes: dict[str, int],
                 max_only: dict[str, float], pooled_means: list[str]):
        self.tensors = list(tensors)
        self.histograms = {name: AbsHistogram(bins) for name in tensors}
        self.means = {name: ChannelMean(axis) for name, axis in mean_axes.items()
                      if name in self.histograms and name not in pooled_means}
        self.means.update((name, ChannelMean(1)) for name in pooled_means)
        self.maxima = {name: PooledMax() for name in max_only}
        self.bounds = max_only
        self.pooled_means = list(pooled_means)  # channel means wanted from pooling

    def grids_fixed(self) -> bool:
        """Every histogram has its grid (from the first value where it is not all zero)."""
        return all(hist.has_grid for hist in self.histograms.values())

    def saturated(self) -> bool:
        """Every max-only tensor has reached the largest value its activation can produce."""
        return all(self.maxima[name].abs_max >= bound for name, bound in self.bounds.items())

    def fix_grids(self, named: dict[str, np.ndarray]) -> None:
        """A batch that is not counted (another shard's) only fixes the grids it can."""
        for name in self.tensors:
            self.histograms[name].fix_grid_from(named[name])

    def for_session(self, max_outputs: dict[str, str],
                    mean_outputs: dict[str, str]) -> SessionObservations:
        """The observations of a session whose pooling nodes write `max_outputs` and
        `mean_outputs` (tensor -> output); every other tensor is read as itself."""
        return SessionObservations(
            at_once=[Observation(self.maxima[name].update, out)
                     for name, out in max_outputs.items()],
            every_batch=[Observation(self.histograms[name].update, name) for name in self.tensors],
            means_batches=[Observation(mean.update, name) for name, mean in self.means.items()
                           if name not in mean_outputs]
            + [Observation(self.means[name].update_pooled, out)
               for name, out in mean_outputs.items()])

    @staticmethod
    def count(observations: SessionObservations, named: dict[str, np.ndarray],
              means_batch: bool) -> list[tuple[Update, np.ndarray]]:
        """Count the at-once observations of one run now; return the updates left for the
        worker thread, in order."""
        for observation in observations.at_once:
            observation.update(named[observation.output])
        due = observations.every_batch + (observations.means_batches if means_batch else [])
        return [(observation.update, named[observation.output]) for observation in due]
