"""Pixel-wise cross-entropy with ignore and optional class weights (the paper's ``L_ce``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from contrastseg.errors import ConfigError
from contrastseg.losses.base import LossContext, LossTerm, TermOutput
from contrastseg.models.segmentation import SegOutput, upsample

__all__ = ["CrossEntropy"]


class CrossEntropy(LossTerm):
    """Cross-entropy over labelled pixels, plus ``aux_weight`` times the same on auxiliary logits when present.

    Args:
        weight: multiplier of the term in the total objective.
        class_weights: one weight per class (``None``: uniform).
        aux_weight: weight of the auxiliary-head loss (0.4 as the authors trained OCRNet and UPerNet); used
            only when the model returns ``aux_logits``.
        name: log name.
    """

    def __init__(
        self,
        *,
        weight: float = 1.0,
        class_weights: Sequence[float] | None = None,
        aux_weight: float = 0.4,
        name: str = "ce",
    ) -> None:
        super().__init__(name=name, weight=weight)
        self.aux_weight = float(aux_weight)
        cw = None if class_weights is None else torch.tensor([float(w) for w in class_weights])
        self.register_buffer("class_weights", cw, persistent=False)

    def bind(self, context: LossContext) -> None:
        super().bind(context)
        if self.class_weights is not None and len(self.class_weights) != context.num_classes:
            raise ConfigError(
                f"{type(self).__name__}.class_weights has {len(self.class_weights)} entries but the data has "
                f"{context.num_classes} classes"
            )

    def _ce_sum(self, logits: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(upsample(logits.float(), target.shape[-2:]), target, weight=self.class_weights,
                               ignore_index=self.ignore_index, reduction="sum")

    def _ce(self, logits: Tensor, target: Tensor) -> Tensor:
        # reduction="sum" divided by the (weighted) count of labelled pixels equals PyTorch's "mean", but an
        # all-ignore batch gives a graph-connected 0 instead of NaN (0/0).
        if logits.shape[-2:] == target.shape[-2:]:
            loss = self._ce_sum(logits, target)
        else:
            # Low-resolution logits: upsample inside a checkpoint, one image at a time, so the full-resolution
            # (K, H, W) logits and their log-softmax exist transiently and are recomputed in backward.
            loss = sum(checkpoint(self._ce_sum, logits[b:b + 1], target[b:b + 1], use_reentrant=False)
                       for b in range(logits.shape[0]))
        valid = target != self.ignore_index
        if self.class_weights is None:
            denom = valid.sum().to(loss.dtype)
        else:
            denom = (self.class_weights[target.masked_fill(~valid, 0)] * valid).sum()
        return loss / denom.clamp_min(1e-12)

    def forward(self, output: SegOutput, target: Tensor) -> Tensor | TermOutput:
        """Mean cross-entropy over pixels whose label is not ``ignore_index``; zero when there are none."""
        loss = self._ce(output.logits, target)
        if output.aux_logits is None or self.aux_weight == 0:
            return loss
        aux = self._ce(output.aux_logits, target)
        return TermOutput(loss=loss + self.aux_weight * aux, logs={f"{self.name}_main": loss, f"{self.name}_aux": aux})
