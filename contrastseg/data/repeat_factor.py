"""Repeat-factor sampling (LVIS-style, as used for CaDIS): frames with rare classes are seen more often."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from contrastseg.data.statistics import cached_per_image

__all__ = ["RepeatFactorSampler", "class_presence", "repeat_factors"]


def class_presence(dataset: Dataset, num_classes: int, *, cache_dir: str | Path | None = None,
                   load_mask: Callable[[int], np.ndarray] | None = None) -> np.ndarray:
    """``(N, C)`` bool: which classes each item contains; computed once and cached as ``.npy``.

    See ``contrastseg.data.statistics.cached_per_image`` for the cache (keyed by the label files and mapping).
    """
    def present(mask: np.ndarray) -> np.ndarray:
        row = np.zeros(num_classes, dtype=bool)
        values = np.unique(mask)
        row[values[values < num_classes]] = True
        return row

    return cached_per_image(dataset, "presence", num_classes, present, cache_dir=cache_dir, load_mask=load_mask,
                            dtype=bool)


def repeat_factors(presence: np.ndarray, threshold: float = 0.15) -> np.ndarray:
    """``r(I) = max_c max(1, sqrt(t / f(c)))`` over the classes of frame ``I``; ``f(c)`` = share of frames with c."""
    freq = presence.mean(axis=0)  # (C,)
    per_class = np.maximum(1.0, np.sqrt(threshold / np.maximum(freq, 1e-12)))
    per_class[freq == 0] = 1.0
    return np.where(presence, per_class[None, :], 1.0).max(axis=1)  # (N,)


class RepeatFactorSampler(DistributedSampler):
    """Each epoch: frame ``I`` appears ``floor(r(I))`` times plus once more with probability ``frac(r(I))``.

    The stochastic rounding and the shuffle are drawn from ``(seed, epoch)`` (``set_epoch``, which Lightning calls),
    identically on every process; each process takes a disjoint, equally long shard of that epoch's list (padded
    by wrapping around), so DDP ranks never wait on each other. Being a ``DistributedSampler``, Lightning keeps it
    instead of wrapping it.

    Every epoch has the same length, ``sum(floor(r)) + ceil(sum(frac(r)))`` items (before sharding): Lightning
    reads a loader's length once per fit, so an epoch drawn longer than the first would be cut short and a shorter
    one would skip its end-of-epoch validation. The extra copies are therefore drawn by systematic sampling over
    a seeded random order of the frames (each frame still gets its extra copy with probability exactly
    ``frac(r(I))``; their number is ``floor`` or ``ceil`` of ``sum(frac(r))``), and when it is the ``floor`` one
    more frame without an extra copy gets one, chosen with probability proportional to ``frac(r)``. That
    adds less than one item per epoch to the expected counts.

    Args:
        factors: ``(N,)`` repeat factors (see :func:`repeat_factors`).
        shuffle: shuffle the epoch's list.
        seed: base seed.
        num_replicas: processes (default: the world size, or 1).
        rank: this process (default: its rank, or 0).
    """

    def __init__(self, factors: np.ndarray, *, shuffle: bool = True, seed: int = 0, num_replicas: int | None = None,
                 rank: int | None = None) -> None:
        if num_replicas is None or rank is None:
            initialized = torch.distributed.is_available() and torch.distributed.is_initialized()
            num_replicas = num_replicas or (torch.distributed.get_world_size() if initialized else 1)
            rank = rank if rank is not None else (torch.distributed.get_rank() if initialized else 0)
        self.factors = np.asarray(factors, dtype=np.float64)
        self.num_replicas, self.rank, self.shuffle, self.seed, self.epoch = num_replicas, rank, shuffle, seed, 0
        self.drop_last = False
        self._whole = np.floor(self.factors).astype(np.int64)  # (N,)
        self._frac = self.factors - self._whole  # (N,) in [0, 1)
        self._num_extra = math.ceil(round(float(self._frac.sum()), 9))  # extra copies per epoch, fixed
        self.epoch_size = int(self._whole.sum()) + self._num_extra  # items per epoch, all ranks together

    def _epoch_indices(self) -> np.ndarray:
        """This epoch's ``epoch_size`` frame indices (every rank computes the same list)."""
        rng = np.random.default_rng([self.seed, self.epoch])  # not seed + epoch: seeds s, s+1 would share orders
        n = len(self.factors)
        # Systematic sampling: points u, u+1, u+2, ... over the fractional parts laid end to end in a random order;
        # frame j gets an extra copy when a point falls in its interval (probability frac_j, at most one point).
        order = rng.permutation(n)  # (N,)
        ends = np.cumsum(self._frac[order])  # (N,)
        u = rng.random()
        hits = np.diff(np.ceil(ends - u), prepend=0.0) > 0  # (N,) one point in [end_{j-1}, end_j)
        extra = np.zeros(n, dtype=bool)
        extra[order[hits]] = True
        short = self._num_extra - int(extra.sum())  # 0, or 1 when the points gave floor(sum frac)
        if short > 0:
            weights = np.where(extra, 0.0, self._frac)
            extra[rng.choice(n, size=short, replace=False, p=weights / weights.sum())] = True
        elif short < 0:  # floating-point edge only
            extra[rng.choice(np.flatnonzero(extra), size=-short, replace=False)] = False
        indices = np.repeat(np.arange(n), self._whole + extra)  # (epoch_size,)
        return rng.permutation(indices) if self.shuffle else indices

    def __iter__(self) -> Iterator[int]:
        indices = self._epoch_indices()
        padded = np.resize(indices, len(self) * self.num_replicas)  # wrap around so every rank has len(self)
        return iter(padded[self.rank::self.num_replicas].tolist())

    def __len__(self) -> int:
        # The same for every epoch (see the class docstring): Lightning's batch count per epoch stays right.
        return math.ceil(self.epoch_size / self.num_replicas)
