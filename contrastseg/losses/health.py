"""Figures that say whether a contrastive term can learn: what the sampler drew, and how the embeddings spread.

Functions of one step's labels and drawn anchors, used by
:class:`~contrastseg.callbacks.ContrastHealthMonitor` and testable by hand:

* :func:`anchor_statistics`: anchors, (image, class) pairs present and sampled, views per pair, classes with a
  positive, and the pixel count of the typical pair;
* :func:`alignment_uniformity`: Wang & Isola's (ICML 2020) alignment of same-class embeddings and uniformity of all
  embeddings on the hypersphere, with classes as the positives.

None of them draws random numbers (a monitored run trains exactly as an unmonitored one).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["alignment_uniformity", "anchor_statistics", "classes_with_positives", "shared_classes"]


def _pair_keys(labels: Tensor, flat_index: Tensor, pixels_per_image: int, num_classes: int) -> Tensor:
    """``image * num_classes + class`` of the pixels at ``flat_index`` of ``labels`` ``(B, h, w)``."""
    return (flat_index // pixels_per_image) * num_classes + labels.reshape(-1)[flat_index]


def classes_with_positives(anchor_labels: Tensor, num_classes: int) -> Tensor:
    """Number of classes with at least two anchors (so that each of them has a positive); a 0-d long tensor."""
    counts = torch.bincount(anchor_labels.long(), minlength=num_classes)  # (num_classes,)
    return (counts >= 2).sum()


def shared_classes(rows: Tensor, columns: Tensor, num_classes: int) -> Tensor:
    """Number of classes among both anchor sets of a cross-scale pair (the rows' classes that have a positive)."""
    a = torch.bincount(rows.long(), minlength=num_classes) > 0  # (num_classes,)
    b = torch.bincount(columns.long(), minlength=num_classes) > 0
    return (a & b).sum()


def anchor_statistics(labels: Tensor, index: Tensor, anchor_labels: Tensor, *, num_classes: int,
                      ignore_index: int = 255) -> dict[str, Tensor]:
    """What the balanced sampler had and drew at one scale.

    Args:
        labels: ``(B, h, w)`` labels at the scale's resolution.
        index: ``(N,)`` flat indices into ``labels`` of the drawn anchors.
        anchor_labels: ``(N,)`` their classes.
        num_classes: classes (labels outside ``0..num_classes-1`` other than ``ignore_index`` are not expected).
        ignore_index: the label never sampled.

    Returns:
        0-d float tensors: ``anchors`` (N), ``pairs`` ((image, class) pairs with a labelled pixel), ``sampled_pairs``
        (pairs with an anchor), ``views`` (anchors per sampled pair, 0 without), ``classes_with_positives`` and
        ``median_pair_pixels`` (pixel count of the median present pair, 0 without).
    """
    b, h, w = labels.shape
    flat = labels.reshape(-1)  # (B*h*w,)
    labelled = ((flat != ignore_index) & (flat >= 0)).nonzero()[:, 0]  # (P,)
    present = _pair_keys(labels, labelled, h * w, num_classes)  # (P,)
    sizes = torch.bincount(present, minlength=b * num_classes)  # (B*num_classes,) pixels per pair
    sizes = sizes[sizes > 0].float()  # (pairs,)
    sampled = _pair_keys(labels, index, h * w, num_classes).unique()  # (sampled pairs,)
    n = torch.tensor(float(index.numel()), device=labels.device)
    n_sampled = torch.tensor(float(sampled.numel()), device=labels.device)
    return {
        "anchors": n,
        "pairs": torch.tensor(float(sizes.numel()), device=labels.device),
        "sampled_pairs": n_sampled,
        "views": n / n_sampled.clamp_min(1.0),
        "classes_with_positives": classes_with_positives(anchor_labels, num_classes).float(),
        "median_pair_pixels": sizes.median() if sizes.numel() else torch.zeros((), device=labels.device),
    }


def alignment_uniformity(z: Tensor, y: Tensor, *, max_anchors: int = 1024) -> tuple[Tensor, Tensor]:
    """Alignment and uniformity (Wang & Isola 2020, ``alpha = 2``, ``t = 2``) of unit-norm embeddings.

    ``alignment = mean_{i != j, y_i = y_j} |z_i - z_j|^2`` (0: every class collapsed to a point; 4: opposite) and
    ``uniformity = log mean_{i != j} exp(-2 |z_i - z_j|^2)`` (lower is more uniform; -4 for antipodal pairs, 0 for a
    collapsed set). Computed in float32 on at most ``max_anchors`` anchors taken at even strides through the set
    (deterministic; the sampler's order is by class, so every class keeps its share).

    Args:
        z: ``(N, D)`` L2-normalised embeddings.
        y: ``(N,)`` their classes.
        max_anchors: anchors used at most.

    Returns:
        ``(alignment, uniformity)`` as 0-d tensors; alignment is NaN without a same-class pair, both are NaN with
        fewer than two anchors.
    """
    n = z.shape[0]
    if n > max_anchors:
        keep = torch.linspace(0, n - 1, max_anchors, device=z.device).round().long()  # (max_anchors,)
        z, y = z[keep], y[keep]
        n = max_anchors
    nan = torch.full((), float("nan"), device=z.device)
    if n < 2:
        return nan, nan
    z = z.detach().float()
    distance = (2.0 - 2.0 * (z @ z.T)).clamp_min(0.0)  # (n, n) squared distances of unit vectors
    off = ~torch.eye(n, dtype=torch.bool, device=z.device)  # (n, n) pairs i != j
    same = (y[:, None] == y[None, :]) & off  # (n, n)
    alignment = distance[same].mean() if bool(same.any()) else nan
    uniformity = torch.logsumexp(-2.0 * distance[off], dim=0) - torch.log(torch.tensor(float(off.sum())))
    return alignment, uniformity
