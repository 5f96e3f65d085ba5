"""HRNetV2 segmentation head (Wang et al., 2020): fuse every stage at the finest resolution."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from contrastseg.models.layers import DecoderOutput, FCNHead
from contrastseg.ops import resize

__all__ = ["HRNetV2Head"]


class HRNetV2Head(nn.Module):
    """Upsample all stages to the finest, concatenate, 1x1 conv-BN-ReLU, 1x1 classifier.

    Args:
        in_channels: channels of each encoder stage, fine to coarse (read from the encoder).
        num_classes: number of output classes.
        channels: width of the fusion layer; ``None`` uses the sum of ``in_channels`` as HRNetV2 does
            (720 for HRNet-W48).
        dropout: dropout before the classifier.
        aux_index: encoder stage of an FCN auxiliary head (training only), as region contrast [15] trains with;
            ``None`` (default): none, as HRNetV2.
        aux_channels: the auxiliary head's width.
    """

    def __init__(
        self, in_channels: Sequence[int], num_classes: int, *, channels: int | None = None, dropout: float = 0.0,
        aux_index: int | None = None, aux_channels: int = 256,
    ) -> None:
        super().__init__()
        if aux_index is not None and not -len(in_channels) <= aux_index < len(in_channels):
            raise ValueError(f"aux_index={aux_index}: the encoder has stages 0..{len(in_channels) - 1}")
        self.aux_index = aux_index
        self.aux = None if aux_index is None else FCNHead(in_channels[aux_index], num_classes, channels=aux_channels)
        total = int(sum(in_channels))
        width = total if channels is None else channels
        self.fuse = nn.Sequential(
            nn.Conv2d(total, width, kernel_size=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(width, num_classes, kernel_size=1)

    def forward(self, features: Sequence[Tensor]) -> Tensor | DecoderOutput:
        """Map stage features to logits at the finest stage's resolution, ``(B, num_classes, h0, w0)`` (with the
        auxiliary logits in training when the head has one)."""
        size = features[0].shape[-2:]
        upsampled = [features[0]] + [resize(f, size) for f in features[1:]]
        x = torch.cat(upsampled, dim=1)  # S x (B, C_s, h0, w0) -> (B, sum C_s, h0, w0)
        logits = self.classifier(self.dropout(self.fuse(x)))
        if self.aux is not None and self.training:
            return DecoderOutput(logits, self.aux(features[self.aux_index]))
        return logits
