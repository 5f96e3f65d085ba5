"""Per-class IoU of several runs side by side."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from contrastseg.evaluation.metrics import SegScores
from contrastseg.viz._mpl import pyplot

__all__ = ["per_class_iou", "plot_iou_comparison"]

RunScores = SegScores | Mapping[str, float] | Sequence[float] | str | Path


def per_class_iou(run: RunScores, class_names: Sequence[str]) -> np.ndarray:
    """``(C,)`` IoU in [0, 1] (NaN where unknown) from any of the forms a run's scores come in.

    Args:
        run: :class:`~contrastseg.evaluation.SegScores` (``module.last_scores["val"]``), a ``{class: iou}``
            mapping, a sequence of ``C`` IoUs, or the path of a ``val_metrics.json``/``test_metrics.json``
            written by validation.
        class_names: the ``C`` class names, in class order.
    """
    if isinstance(run, (str, Path)):
        payload = json.loads(Path(run).read_text())
        run = {row["class"]: row["iou"] for row in payload["per_class"]}
    if isinstance(run, SegScores):
        values = run.iou.tolist()
    elif isinstance(run, Mapping):
        missing = [c for c in class_names if c not in run]
        if missing:
            raise KeyError(f"no IoU for class {missing[0]!r} in the run's scores")
        values = [run[c] for c in class_names]
    else:
        values = list(run)
    if len(values) != len(class_names):
        raise ValueError(f"{len(values)} IoUs for {len(class_names)} classes")
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def plot_iou_comparison(runs: Mapping[str, RunScores], class_names: Sequence[str], *,
                        highlight: Sequence[str] = (), ax: Any = None, sort: bool = False) -> Any:
    """Grouped bars of per-class IoU (%) per run, with each run's mIoU in the legend.

    Args:
        runs: ``{run name: scores}`` in any form :func:`per_class_iou` reads (two runs, or more).
        class_names: class names in class order.
        highlight: class names whose tick labels are drawn bold (e.g. the rare classes).
        ax: an Axes to draw into (a new figure otherwise).
        sort: order classes by the first run's IoU, lowest first.

    Returns:
        The matplotlib Figure.
    """
    plt = pyplot()
    table = np.stack([per_class_iou(r, class_names) for r in runs.values()]) * 100  # (R, C)
    order = np.argsort(np.nan_to_num(table[0], nan=-1)) if sort else np.arange(len(class_names))
    if ax is None:
        _, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(class_names) * max(1, len(runs)) / 1.5), 3.6))
    width = 0.8 / len(runs)
    positions = np.arange(len(class_names))
    for r, name in enumerate(runs):
        miou = np.nanmean(table[r]) if np.isfinite(table[r]).any() else float("nan")
        ax.bar(positions + (r - (len(runs) - 1) / 2) * width, np.nan_to_num(table[r, order]), width,
               label=f"{name} (mIoU {miou:.1f})")
    ax.set_xticks(positions, [class_names[i] for i in order], rotation=45, ha="right")
    for tick, i in zip(ax.get_xticklabels(), order):
        if class_names[i] in set(highlight):
            tick.set_fontweight("bold")
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.legend(frameon=False)
    ax.figure.tight_layout()
    return ax.figure
