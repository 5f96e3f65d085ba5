"""Statistics of a paired comparison over seeds: per-arm mean and standard deviation, and the paired difference
with a bootstrap confidence interval.

Two arms trained with the same seeds are paired: seed ``s`` gives both the same data order, so the difference
``B_s - A_s`` removes what the seed does to both. The interval resamples the seeds with replacement and takes the
percentiles of the mean difference (the percentile bootstrap); with a handful of seeds it is rough, and with fewer
than two there is none.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["compare_paired", "paired_bootstrap_ci", "summary"]


def paired_bootstrap_ci(differences: Sequence[float], *, resamples: int = 10000, level: float = 0.95,
                        seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean of paired differences.

    Each resample draws ``n`` of the ``n`` differences with replacement (``numpy.random.default_rng(seed)``, so the
    interval is the same on every call) and takes their mean; the interval is the ``(1 - level) / 2`` and
    ``(1 + level) / 2`` percentiles of those means (numpy's linear interpolation).

    Args:
        differences: one difference per seed, ``B_s - A_s``.
        resamples: bootstrap resamples.
        level: coverage of the interval.
        seed: seed of the resampling.

    Returns:
        ``(low, high)``, or ``None`` with fewer than two differences.
    """
    values = np.asarray(differences, dtype=np.float64)  # (n,)
    if values.size < 2:
        return None
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, values.size, size=(resamples, values.size))  # (resamples, n) seed indices
    means = values[picks].mean(axis=1)  # (resamples,)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def summary(values: Sequence[float]) -> dict[str, Any]:
    """``n``, ``mean`` and the sample standard deviation ``std`` (``None`` below two values; ``mean`` ``None`` for
    none)."""
    return {"n": len(values), "mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None}


def compare_paired(a: Mapping[Any, float], b: Mapping[Any, float], *, resamples: int = 10000,
                   seed: int = 0) -> dict[str, Any]:
    """Both arms' ``n``, ``mean`` and ``std``, and the paired difference ``B - A`` over the seeds both have.

    Args:
        a: per seed, arm A's score.
        b: per seed, arm B's score.
        resamples: bootstrap resamples of :func:`paired_bootstrap_ci`.
        seed: seed of the resampling.

    Returns:
        ``{"a": {"n", "mean", "std"}, "b": {...}, "diff": {"n", "mean", "std", "ci", "per_seed"}}`` (``std``: the
        sample standard deviation, ``None`` below two values); ``ci`` is ``[low, high]`` at 95 %, or ``None`` with
        fewer than two paired seeds.
    """
    paired = [s for s in a if s in b]
    per_seed = {s: b[s] - a[s] for s in paired}
    ci = paired_bootstrap_ci(list(per_seed.values()), resamples=resamples, seed=seed)
    return {"a": summary(list(a.values())), "b": summary(list(b.values())),
            "diff": {**summary(list(per_seed.values())), "ci": None if ci is None else list(ci),
                     "per_seed": per_seed}}
