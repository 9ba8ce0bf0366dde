"""Balanced drawing of training images: a weighted sampler over strata.

LFW is 78% male and UTKFace is mostly White: drawn uniformly, a model learns those
shares. :func:`balance_weights` gives each image a drawing weight so that, within each
set (``LabelledSet.source``), every stratum (gender x UTKFace race group, or gender
alone with ``race=False``; an unknown label is a value of its own) is drawn equally often, while each set keeps its share
of the draws (its share of the images). :class:`BalancedSampler` draws an epoch of
that many images with replacement, the same on every rank of a torchrun job, each
rank taking its own slice.
"""

from __future__ import annotations

import numpy as np
import torch

from train.data import LabelledSet


def balance_weights(labels: LabelledSet, race: bool = True) -> np.ndarray:
    """(N,) float64 drawing weights summing to 1 (see the module docstring); ``race``:
    even UTKFace's race groups too (False: genders only, races as they come)."""
    n = len(labels)
    weights = np.zeros(n, np.float64)
    for source in np.unique(labels.source):
        in_set = labels.source == source
        races = labels.race[in_set] + 1 if race else 0
        strata = labels.gender[in_set] * 16 + races  # -1..1 x -1..4, distinct codes
        codes, index, counts = np.unique(strata, return_inverse=True, return_counts=True)
        share = in_set.sum() / n
        weights[in_set] = share / len(codes) / counts[index]
    return weights


class BalancedSampler(torch.utils.data.Sampler):
    """Draws ``len(weights)`` indices per epoch with replacement, by ``weights``.

    Deterministic in ``(seed, epoch)``; with ``world`` > 1 each ``rank`` takes every
    world-th draw (one epoch of the job is still about one pass's worth of images)."""

    def __init__(self, weights: np.ndarray, seed: int, rank: int = 0, world: int = 1):
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.seed, self.rank, self.world = seed, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(range(self.rank, len(self.weights), self.world))

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        draws = torch.multinomial(self.weights, len(self.weights), replacement=True, generator=generator)
        return iter(draws[self.rank :: self.world].tolist())
