"""Small building blocks shared by the decoders."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

__all__ = ["ConvBNReLU", "DecoderOutput", "FCNHead"]


class DecoderOutput(NamedTuple):
    """What a decoder may return instead of a bare logits tensor.

    Attributes:
        logits: ``(B, K, h, w)`` main logits at the decoder's resolution.
        aux_logits: auxiliary-head logits (training only), or ``None``.
        features: decoder feature maps a contrastive term may use instead of the encoder's (UPerNet's FPN
            outputs), fine to coarse, or ``None``.
    """

    logits: Tensor
    aux_logits: Tensor | None = None
    features: list[Tensor] | None = None


class ConvBNReLU(nn.Sequential):
    """Conv (no bias) - BatchNorm - ReLU with 'same' padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, *, dilation: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=dilation * (kernel_size // 2),
                      dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class FCNHead(nn.Sequential):
    """The auxiliary head of OCRNet / UPerNet / DeepLabv3: ConvBNReLU, dropout, 1x1 classifier.

    Args:
        in_channels: input channels.
        num_classes: output classes.
        channels: hidden width (256 on a ResNet stage 3, as mmsegmentation's baselines).
        kernel_size: 3, or 1 for HRNet-OCR's auxiliary head.
        dropout: dropout before the classifier.
    """

    def __init__(self, in_channels: int, num_classes: int, *, channels: int = 256, kernel_size: int = 3,
                 dropout: float = 0.1) -> None:
        super().__init__(ConvBNReLU(in_channels, channels, kernel_size), nn.Dropout2d(dropout),
                         nn.Conv2d(channels, num_classes, 1))
