"""UPerNet (Xiao et al., 2018): pyramid pooling on the last stage, FPN fusion, FCN auxiliary head.

Our own rather than smp's ``UPerNetDecoder``: the paper contrasts on the FPN outputs for ADE20K (Table 6a), so the
head must expose them, and mmsegmentation's 512-channel layout is what the paper's parameter counts assume.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from contrastseg.models.layers import ConvBNReLU, DecoderOutput, FCNHead
from contrastseg.ops import resize

__all__ = ["UPerNetHead"]


class UPerNetHead(nn.Module):
    """PPM + FPN + fusion; exposes the FPN outputs (``feature_channels`` / ``feature_strides`` by stage).

    Args:
        in_channels: encoder channels, fine to coarse.
        num_classes: output classes.
        channels: PPM/FPN width (512).
        pool_scales: pyramid pooling bins.
        dropout: dropout before the classifier.
        aux_index: encoder stage of the auxiliary FCN head (2: stage 3); ``None`` disables it.
        aux_channels: auxiliary head width (256).
    """

    def __init__(
        self, in_channels: Sequence[int], num_classes: int, *, channels: int = 512,
        pool_scales: Sequence[int] = (1, 2, 3, 6), dropout: float = 0.1, aux_index: int | None = 2,
        aux_channels: int = 256,
    ) -> None:
        super().__init__()
        last = in_channels[-1]
        self.ppm = nn.ModuleList(nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvBNReLU(last, channels))
                                 for s in pool_scales)
        self.ppm_bottleneck = ConvBNReLU(last + len(pool_scales) * channels, channels, 3)
        self.laterals = nn.ModuleList(ConvBNReLU(c, channels) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvBNReLU(channels, channels, 3) for _ in in_channels[:-1])
        self.fpn_bottleneck = ConvBNReLU(len(in_channels) * channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        self.aux_index = aux_index
        self.aux = None if aux_index is None else FCNHead(in_channels[aux_index], num_classes, channels=aux_channels)
        self.feature_channels = (channels,) * len(in_channels)

    def forward(self, features: Sequence[Tensor]) -> DecoderOutput:
        top = features[-1]
        pooled = [resize(branch(top), top.shape[-2:]) for branch in self.ppm]
        laterals = [lat(f) for lat, f in zip(self.laterals, features[:-1])]
        laterals.append(self.ppm_bottleneck(torch.cat([top, *pooled], dim=1)))  # (B, C_last + P*C, h, w) -> (B, C, h, w)
        for i in range(len(laterals) - 1, 0, -1):  # top-down pathway
            laterals[i - 1] = laterals[i - 1] + resize(laterals[i], laterals[i - 1].shape[-2:])
        fpn = [conv(x) for conv, x in zip(self.fpn_convs, laterals[:-1])] + [laterals[-1]]
        size = fpn[0].shape[-2:]
        fused = self.fpn_bottleneck(torch.cat([resize(x, size) for x in fpn], dim=1))  # (B, S*C, h0, w0) -> (B, C, ...)
        logits = self.classifier(self.dropout(fused))
        aux = self.aux(features[self.aux_index]) if self.aux is not None and self.training else None
        return DecoderOutput(logits, aux, fpn)
