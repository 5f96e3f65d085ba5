"""Online hard example mining cross-entropy, as the paper's OCRNet and DeepLabv3 baselines were trained."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from contrastseg.losses.cross_entropy import CrossEntropy
from contrastseg.ops import resize

__all__ = ["OhemCrossEntropy", "ohem_cross_entropy"]


def ohem_cross_entropy(logits: Tensor, target: Tensor, *, ignore_index: int = 255, thresh: float = 0.7,
                       min_kept: int = 100000, class_weights: Tensor | None = None) -> Tensor:
    """Mean cross-entropy over the hard pixels of the batch.

    A labelled pixel is hard when the softmax probability of its true class is below ``threshold =
    max(thresh, p_(min_kept))``, where ``p_(k)`` is the ``k``-th smallest such probability (0-based) in the batch:
    confident pixels are dropped unless fewer than ``min_kept`` pixels would remain. This is HRNet-OCR's
    ``OhemCrossEntropy`` (mmsegmentation's ``OHEMPixelSampler`` selects the same pixels, but then averages over all
    labelled pixels rather than the kept ones).

    Args:
        logits: ``(B, K, H, W)`` at the labels' size.
        target: ``(B, H, W)`` labels.
        ignore_index: label of unlabelled pixels (never kept).
        thresh: probability above which a pixel is easy (0.7).
        min_kept: pixels kept at least, per batch (100000).
        class_weights: optional ``(K,)`` weights of the per-pixel losses.

    Returns:
        A scalar; a graph-connected zero when no pixel is labelled.
    """
    valid = target != ignore_index  # (B, H, W)
    n = int(valid.sum())
    if n == 0:
        return logits.sum() * 0.0
    safe = target.masked_fill(~valid, 0)  # (B, H, W) ignore pixels point at class 0; `keep` masks them out
    # One log-softmax and one gather serve both the per-pixel losses and the hardness ranking.
    picked = logits.log_softmax(dim=1).gather(1, safe[:, None])[:, 0]  # (B, H, W) log p(true class)
    nll = -picked if class_weights is None else -picked * class_weights[safe]
    with torch.no_grad():
        prob = picked.exp()  # (B, H, W)
        kth = torch.kthvalue(prob[valid], min(min_kept, n - 1) + 1).values  # p_(min_kept), 0-based rank min(.., N-1)
        keep = valid & (prob < torch.clamp(kth, min=thresh))
    # where, not a product: a non-finite loss at an unkept pixel must not reach the sum (0 * inf is NaN)
    return torch.where(keep, nll, 0.0).sum() / keep.sum().clamp_min(1)  # an empty selection: exact, connected 0


class OhemCrossEntropy(CrossEntropy):
    """:class:`CrossEntropy` restricted to hard pixels by :func:`ohem_cross_entropy` on the main logits; the
    auxiliary logits get plain cross-entropy, as in HRNet-OCR (``0.4 CE(aux) + OHEM(main)``) and mmsegmentation
    (OHEM only in the decode head).

    Args:
        thresh: probability above which a pixel is easy (0.7, as the authors' OCRNet configs).
        min_kept: pixels kept at least per batch (100000).
        **kwargs: ``weight``, ``class_weights`` (a list or ``"median_frequency"``), ``aux_weight`` (0.4) and
            ``name`` ("ohem") as for :class:`CrossEntropy`.
    """

    def __init__(self, *, thresh: float = 0.7, min_kept: int = 100000, name: str = "ohem", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.thresh, self.min_kept = float(thresh), int(min_kept)

    def _main(self, logits: Tensor, target: Tensor) -> Tensor:
        logits = resize(logits.float(), target.shape[-2:])  # (B, K, h, w) -> (B, K, H, W): the batch is ranked
        return ohem_cross_entropy(logits, target, ignore_index=self.ignore_index, thresh=self.thresh,
                                  min_kept=self.min_kept, class_weights=self.class_weights)
