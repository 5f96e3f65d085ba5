"""OCRNet (Yuan et al., 2020): object-contextual representations from soft object regions."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from contrastseg.models.layers import ConvBNReLU, DecoderOutput, FCNHead
from contrastseg.ops import resize

__all__ = ["OCRHead"]


class OCRHead(nn.Module):
    """The OCR module with its auxiliary head (whose soft regions it pools).

    HRNet-OCR (``in_index=None``): all stages upsampled to the finest and concatenated (720 channels for W48)
    feed both heads; the auxiliary head is 1x1 conv-BN-ReLU at full width. ResNet-OCR (``in_index=-1``,
    ``aux_index=-2``): stage 4 feeds OCR, stage 3 an FCN auxiliary head, as mmsegmentation's baselines.

    Args:
        in_channels: encoder channels, fine to coarse.
        num_classes: output classes.
        in_index: encoder stage of the OCR input; ``None`` concatenates all stages.
        aux_index: encoder stage of the auxiliary head; ``None`` uses the OCR input.
        channels: OCR width (512).
        key_channels: attention key/value width (256).
        dropout: dropout of the OCR bottleneck (0.05).
    """

    def __init__(
        self, in_channels: Sequence[int], num_classes: int, *, in_index: int | None = None,
        aux_index: int | None = None, channels: int = 512, key_channels: int = 256, dropout: float = 0.05,
    ) -> None:
        super().__init__()
        self.in_index, self.aux_index = in_index, aux_index
        width = sum(in_channels) if in_index is None else in_channels[in_index]
        aux_width = width if aux_index is None else in_channels[aux_index]
        self.aux = (FCNHead(aux_width, num_classes, channels=aux_width, kernel_size=1, dropout=0.0)
                    if aux_index is None else FCNHead(aux_width, num_classes, channels=256))
        self.conv = ConvBNReLU(width, channels, 3)
        self.f_pixel = nn.Sequential(ConvBNReLU(channels, key_channels), ConvBNReLU(key_channels, key_channels))
        self.f_object = nn.Sequential(ConvBNReLU(channels, key_channels), ConvBNReLU(key_channels, key_channels))
        self.f_down = ConvBNReLU(channels, key_channels)
        self.f_up = ConvBNReLU(key_channels, channels)
        self.bottleneck = nn.Sequential(ConvBNReLU(2 * channels, channels), nn.Dropout2d(dropout))
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        self.scale = key_channels**-0.5

    def _input(self, features: Sequence[Tensor], index: int | None) -> Tensor:
        if index is not None:
            return features[index]
        size = features[0].shape[-2:]
        return torch.cat([resize(f, size) for f in features], dim=1)  # S x (B, C_s, h, w) -> (B, sum C_s, h, w)

    def forward(self, features: Sequence[Tensor]) -> DecoderOutput:
        x = self._input(features, self.in_index)
        aux = self.aux(x if self.aux_index is None else self._input(features, self.aux_index))
        feats = self.conv(x)  # (B, C, h, w)
        b, c, h, w = feats.shape
        regions = resize(aux, (h, w)).flatten(2).softmax(dim=2)  # (B, K, h*w): soft object regions
        objects = regions @ feats.flatten(2).transpose(1, 2)  # (B, K, hw) x (B, hw, C) -> (B, K, C)
        objects = objects.transpose(1, 2).unsqueeze(-1)  # (B, K, C) -> (B, C, K, 1)
        query = self.f_pixel(feats).flatten(2).transpose(1, 2)  # (B, hw, Ck)
        key = self.f_object(objects).flatten(2)  # (B, Ck, K)
        value = self.f_down(objects).flatten(2).transpose(1, 2)  # (B, K, Ck)
        attention = (query @ key * self.scale).softmax(dim=-1)  # (B, hw, K)
        context = (attention @ value).transpose(1, 2).reshape(b, -1, h, w)  # (B, hw, Ck) -> (B, Ck, h, w)
        out = self.bottleneck(torch.cat([self.f_up(context), feats], dim=1))  # (B, 2C, h, w) -> (B, C, h, w)
        return DecoderOutput(self.classifier(out), aux if self.training else None)
