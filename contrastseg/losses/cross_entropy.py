"""Pixel-wise cross-entropy with ignore and optional class weights (the paper's ``L_ce``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from contrastseg.errors import ConfigError
from contrastseg.losses.base import LossContext, LossTerm, TermOutput
from contrastseg.models.segmentation import SegOutput
from contrastseg.ops import resize

__all__ = ["CrossEntropy"]


class CrossEntropy(LossTerm):
    """Cross-entropy over labelled pixels, plus ``aux_weight`` times the same on auxiliary logits when present.

    Args:
        weight: multiplier of the term in the total objective.
        class_weights: one weight per class, ``"median_frequency"`` (SegNet's median frequency balancing,
            ``w_c = median_k f_k / f_c`` with ``f_c`` the pixel share of class ``c`` in the training images that
            contain it; computed from the training split once and cached, see
            ``contrastseg.data.statistics.class_pixel_counts``), or ``None`` (uniform).
        aux_weight: weight of the auxiliary-head loss (0.4 as the authors trained OCRNet and UPerNet); used
            only when the model returns ``aux_logits``.
        name: log name.
    """

    def __init__(
        self,
        *,
        weight: float = 1.0,
        class_weights: Sequence[float] | str | None = None,
        aux_weight: float = 0.4,
        name: str = "ce",
    ) -> None:
        super().__init__(name=name, weight=weight)
        self.aux_weight = float(aux_weight)
        if isinstance(class_weights, str) and class_weights != "median_frequency":
            raise ConfigError(f"{name}.class_weights: a list of weights or 'median_frequency', got {class_weights!r}")
        self.weighting = class_weights if isinstance(class_weights, str) else None
        cw = None if class_weights is None or self.weighting else torch.tensor([float(w) for w in class_weights])
        self.register_buffer("class_weights", cw, persistent=False)

    def setup_data(self, datamodule: Any) -> None:
        if self.weighting != "median_frequency" or self.class_weights is not None:
            return
        from contrastseg.data.statistics import class_pixel_counts, median_frequency_weights

        if "train" not in getattr(datamodule, "datasets", {}):
            datamodule.setup("fit")
        counts = class_pixel_counts(datamodule.datasets["train"], self.num_classes,
                                    cache_dir=getattr(datamodule, "cache_dir", None))
        self.class_weights = torch.as_tensor(median_frequency_weights(counts), dtype=torch.float32)

    def bind(self, context: LossContext) -> None:
        super().bind(context)
        self.num_classes = context.num_classes
        if self.class_weights is not None and len(self.class_weights) != context.num_classes:
            raise ConfigError(
                f"{type(self).__name__}.class_weights has {len(self.class_weights)} entries but the data has "
                f"{context.num_classes} classes"
            )

    def _ce_sum(self, logits: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(resize(logits.float(), target.shape[-2:]), target, weight=self.class_weights,
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

    def _main(self, logits: Tensor, target: Tensor) -> Tensor:
        """The main logits' loss (subclasses such as OHEM change it; the auxiliary logits keep :meth:`_ce`)."""
        return self._ce(logits, target)

    def forward(self, output: SegOutput, target: Tensor) -> Tensor | TermOutput:
        """Mean cross-entropy over pixels whose label is not ``ignore_index``; zero when there are none."""
        if self.weighting is not None and self.class_weights is None:
            raise RuntimeError(f"{self.name}: class_weights={self.weighting!r} are computed in setup_data(datamodule), "
                               "which ContrastSegModule.setup calls; call it yourself outside a Trainer")
        return self.main_and_aux(self._main, output, target, self.aux_weight, aux_fn=self._ce)
