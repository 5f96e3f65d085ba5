"""DeepLabv3 (Chen et al., 2017): ASPP on the last stage of a dilated encoder, plus an FCN auxiliary head."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from contrastseg._compat import aspp_decoder
from contrastseg.models.layers import DecoderOutput, FCNHead

__all__ = ["DeepLabV3Head"]


class DeepLabV3Head(nn.Module):
    """ASPP (smp's decoder: 1x1, three dilated 3x3, image pooling; then 3x3 conv-BN-ReLU) and a classifier.

    Args:
        in_channels: encoder channels, fine to coarse; ASPP reads the last.
        num_classes: output classes.
        channels: ASPP width (256).
        atrous_rates: dilation rates; (12, 24, 36) at output stride 8, (6, 12, 18) at 16.
        dropout: ASPP dropout.
        aux_index: encoder stage of the auxiliary FCN head (-2: ResNet stage 3); ``None`` disables it.
        aux_channels: auxiliary head width.
    """

    def __init__(
        self, in_channels: Sequence[int], num_classes: int, *, channels: int = 256,
        atrous_rates: Sequence[int] = (12, 24, 36), dropout: float = 0.1, aux_index: int | None = -2,
        aux_channels: int = 256,
    ) -> None:
        super().__init__()
        self.aspp = aspp_decoder(in_channels[-1], channels, atrous_rates, dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        self.aux_index = aux_index
        self.aux = None if aux_index is None else FCNHead(in_channels[aux_index], num_classes, channels=aux_channels)

    def forward(self, features: Sequence[Tensor]) -> DecoderOutput:
        logits = self.classifier(self.aspp(list(features)))
        aux = self.aux(features[self.aux_index]) if self.aux is not None and self.training else None
        return DecoderOutput(logits, aux)
