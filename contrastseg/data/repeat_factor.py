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

    See :func:`~contrastseg.data.statistics.cached_per_image` for the cache (keyed by the label file list).
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

    The stochastic rounding and the shuffle are drawn from ``seed + epoch`` (``set_epoch``, which Lightning calls),
    identically on every process; each process takes a disjoint, equally long shard of that epoch's list (padded
    by wrapping around), so DDP ranks never wait on each other. Being a ``DistributedSampler``, Lightning keeps it
    instead of wrapping it.

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

    def _epoch_indices(self) -> np.ndarray:
        rng = np.random.default_rng(self.seed + self.epoch)
        whole = np.floor(self.factors).astype(np.int64)
        extra = rng.random(len(self.factors)) < (self.factors - whole)
        indices = np.repeat(np.arange(len(self.factors)), whole + extra)
        return rng.permutation(indices) if self.shuffle else indices

    def __iter__(self) -> Iterator[int]:
        indices = self._epoch_indices()
        per_rank = math.ceil(len(indices) / self.num_replicas)
        padded = np.resize(indices, per_rank * self.num_replicas)  # wrap around so every rank has per_rank
        return iter(padded[self.rank::self.num_replicas].tolist())

    def __len__(self) -> int:
        # The epoch's length varies slightly with the stochastic rounding; report this epoch's.
        return math.ceil(len(self._epoch_indices()) / self.num_replicas)
