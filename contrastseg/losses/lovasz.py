"""Lovasz-softmax (Berman et al., CVPR 2018): a surrogate of the per-class Jaccard loss (the paper's CaDIS baseline)."""

from __future__ import annotations

import torch
from segmentation_models_pytorch.losses import LovaszLoss
from torch import Tensor

from contrastseg.losses.base import LossTerm, TermOutput
from contrastseg.models.segmentation import SegOutput
from contrastseg.ops import resize

__all__ = ["LovaszSoftmax"]


class LovaszSoftmax(LossTerm):
    """Lovasz-softmax over labelled pixels, averaged over the classes present (smp's ``LovaszLoss``).

    smp's implementation drops ``ignore_index`` pixels before sorting, as the original does; our tests check it
    against a direct evaluation of the Lovasz extension of the Jaccard loss. The cases it gets wrong (as does the
    original) are handled here: a batch with no labelled pixel (it returns an empty tensor) gives a graph-connected
    zero, and with ``per_image`` an image without labelled pixels (an empty tensor in its mean, which then fails
    or comes back empty) is left out of the mean over images.

    Args:
        weight: multiplier of the term in the objective (1 when it replaces CE, as for CaDIS in Table 3b).
        per_image: average the loss over images instead of computing it over the batch's pixels.
        aux_weight: weight of the same loss on auxiliary logits (0: not applied).
        name: log name.
    """

    def __init__(self, *, weight: float = 1.0, per_image: bool = False, aux_weight: float = 0.0,
                 name: str = "lovasz") -> None:
        super().__init__(name=name, weight=weight)
        self.per_image, self.aux_weight = per_image, float(aux_weight)
        self._smp: LovaszLoss | None = None

    def _loss(self, logits: Tensor, target: Tensor) -> Tensor:
        logits = resize(logits.float(), target.shape[-2:])  # (B, K, h, w) -> (B, K, H, W)
        labelled = (target != self.ignore_index).flatten(1).any(dim=1).tolist()  # (B,) one host sync
        if not any(labelled):
            return logits.sum() * 0.0
        if self._smp is None:
            self._smp = LovaszLoss("multiclass", ignore_index=self.ignore_index, from_logits=True)
        if not self.per_image:
            return self._smp(logits, target)
        # The mean over the images that have labelled pixels (smp's per_image breaks on one that has none).
        return torch.stack([self._smp(logits[b:b + 1], target[b:b + 1])
                            for b, keep in enumerate(labelled) if keep]).mean()

    def forward(self, output: SegOutput, target: Tensor) -> Tensor | TermOutput:
        """Lovasz-softmax of ``output.logits`` (and auxiliary logits) against labels ``(B, H, W)``."""
        return self.main_and_aux(self._loss, output, target, self.aux_weight)
