"""Segmentation scores from a confusion matrix: the functional core behind the module's metrics.

The stateful, DDP-synchronised accumulation is torchmetrics' ``MulticlassConfusionMatrix``; the formulas that
turn the summed matrix into IoU and accuracy live here, tested against a numpy reference.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.table import Table
from torch import Tensor

__all__ = ["SegScores", "group_miou", "scores_from_confusion", "scores_table", "write_scores"]


@dataclass(frozen=True)
class SegScores:
    """Scores of a summed confusion matrix.

    Attributes:
        iou: ``(C,)`` per-class IoU; NaN for a class absent from both labels and predictions.
        miou: mean of the non-NaN IoUs.
        acc: pixel accuracy over labelled pixels.
        class_acc: ``(C,)`` per-class recall; NaN for classes absent from the labels.
        support: ``(C,)`` labelled pixels per class.
    """

    iou: Tensor
    miou: float
    acc: float
    class_acc: Tensor
    support: Tensor


def scores_from_confusion(confmat: Tensor) -> SegScores:
    """IoU = TP / (TP + FP + FN) per class, mIoU over classes seen, pixel accuracy = trace / total."""
    cm = confmat.double()
    tp = cm.diagonal()
    support = cm.sum(dim=1)  # labelled pixels per true class
    union = support + cm.sum(dim=0) - tp
    iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))
    class_acc = torch.where(support > 0, tp / support.clamp_min(1), torch.full_like(tp, float("nan")))
    total = cm.sum()
    miou = float(iou.nanmean()) if bool((union > 0).any()) else float("nan")
    acc = float(tp.sum() / total) if total > 0 else float("nan")
    return SegScores(iou=iou.float(), miou=miou, acc=acc, class_acc=class_acc.float(), support=support.long())


def group_miou(scores: SegScores, groups: Mapping[str, Sequence[int]]) -> dict[str, float]:
    """Mean IoU over each group's classes (NaN classes, absent from labels and predictions, are skipped)."""
    out = {}
    for name, classes in groups.items():
        ious = scores.iou[list(classes)] if len(classes) else scores.iou[:0]
        out[name] = float(ious.nanmean()) if bool((~torch.isnan(ious)).any()) else float("nan")
    return out


def scores_table(scores: SegScores, class_names: Sequence[str], *, title: str = "validation") -> Table:
    """A rich table with one row per class (IoU, accuracy, labelled pixels) and the means."""
    table = Table(title=title, caption=f"mIoU {100 * scores.miou:.2f}   pixel acc {100 * scores.acc:.2f}")
    for col, justify in (("class", "left"), ("IoU", "right"), ("acc", "right"), ("pixels", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for name, iou, acc, n in zip(class_names, scores.iou.tolist(), scores.class_acc.tolist(), scores.support.tolist()):
        table.add_row(name, _pct(iou), _pct(acc), f"{n:,}")
    return table


def _pct(value: float) -> str:
    return "-" if value != value else f"{100 * value:.2f}"  # NaN -> "-"


def write_scores(scores: SegScores, groups: Mapping[str, float], class_names: Sequence[str], folder: str | Path,
                 stage: str, **meta: int) -> Path:
    """Write ``<stage>_metrics.json`` (everything) and ``<stage>_metrics.csv`` (one row per class) in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    per_class = [{"class": n, "iou": _num(i), "acc": _num(a), "pixels": int(p)} for n, i, a, p in
                 zip(class_names, scores.iou.tolist(), scores.class_acc.tolist(), scores.support.tolist())]
    payload = {**meta, "mIoU": _num(scores.miou), "acc": _num(scores.acc),
               "group_mIoU": {k: _num(v) for k, v in groups.items()}, "per_class": per_class}
    path = folder / f"{stage}_metrics.json"
    path.write_text(json.dumps(payload, indent=2))
    with (folder / f"{stage}_metrics.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["class", "iou", "acc", "pixels"])
        writer.writeheader()
        writer.writerows(per_class)
    return path


def _num(value: float) -> float | None:
    return None if value != value else round(float(value), 6)  # NaN -> null in JSON
