"""Encoder + decoder = segmentation model; the output carries the multi-scale features for contrastive terms."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from contrastseg.errors import ConfigError
from contrastseg.models.encoders import Encoder
from contrastseg.models.hrnet import HRNetV2Head
from contrastseg.models.layers import DecoderOutput
from contrastseg.ops import resize

__all__ = ["DecoderFactory", "SegOutput", "SegmentationModel", "SegmentationNet", "predict_classes"]

DecoderFactory = Callable[[Sequence[int], int], nn.Module]
"""A decoder class (or partial) called as ``decoder(in_channels, num_classes)``."""


@torch.no_grad()
def predict_classes(logits: Tensor, size: Sequence[int]) -> Tensor:
    """Class per pixel at ``size``, upsampling one image at a time: ``(B, K, h, w)`` -> ``(B, H, W)``."""
    return torch.stack([resize(logit[None], size)[0].argmax(dim=0) for logit in logits])


class SegOutput(NamedTuple):
    """What a segmentation model returns.

    Attributes:
        logits: ``(B, num_classes, H, W)`` at the input image's size, or at the decoder's resolution when the
            model was built with ``upsample_logits=False`` (losses and metrics upsample them image by image).
        aux_logits: logits of an auxiliary head, at the same resolution as ``logits``, or ``None``.
        features: the multi-scale features handed to contrastive terms, fine to coarse, ``(B, C_s, H/s, W/s)``.
    """

    logits: Tensor
    aux_logits: Tensor | None
    features: list[Tensor]


class SegmentationNet(nn.Module):
    """Base class of the networks :class:`~contrastseg.ContrastSegModule` trains: ``forward(image)`` returns a
    :class:`SegOutput`.

    :class:`SegmentationModel` (an encoder and a decoder) is the one this library builds. To train your own network
    from a config (``model.net.class_path``), subclass this, take ``num_classes`` as the first constructor
    argument, and give ``feature_channels`` / ``feature_strides`` (one entry per map of ``SegOutput.features``)
    when contrastive terms should read its features.
    """

    feature_channels: tuple[int, ...] = ()
    feature_strides: tuple[int, ...] = ()


class SegmentationModel(SegmentationNet):
    """An encoder and a decoder whose channel numbers come from the encoder.

    Args:
        num_classes: number of classes (linked from the data module by the CLI).
        encoder: the backbone; must return a list of NCHW maps and expose ``channels`` and ``strides``.
        decoder: a class or partial called as ``decoder(encoder.channels, num_classes)``; returns logits or a
            :class:`~contrastseg.models.layers.DecoderOutput` (logits, auxiliary logits, decoder features).
        contrast_features: ``"encoder"`` hands the encoder stages to contrastive terms (the paper's default);
            ``"decoder"`` hands the decoder's feature maps (UPerNet's FPN outputs, the paper's ADE20K choice).
        upsample_logits: return logits at the input size (``True``), or at the decoder's resolution so that
            :class:`~contrastseg.losses.CrossEntropy` and the metrics upsample one image at a time and no
            full-resolution ``(B, K, H, W)`` tensor is kept for autograd (150 ADE20K classes at 512x512 and batch
            16 is 2.5 GB per copy).

    Example:
        >>> model = SegmentationModel(11, encoder=Encoder("resnet18"))
        >>> out = model(torch.randn(2, 3, 64, 96))   # out.logits: (2, 11, 64, 96)
    """

    def __init__(
        self, num_classes: int, *, encoder: Encoder | None = None, decoder: DecoderFactory = HRNetV2Head,
        contrast_features: str = "encoder", upsample_logits: bool = True,
    ) -> None:
        super().__init__()
        self.encoder = Encoder("resnet18") if encoder is None else encoder
        self.decoder = decoder(tuple(self.encoder.channels), num_classes)
        self.num_classes = num_classes
        if contrast_features not in ("encoder", "decoder"):
            raise ConfigError(f"contrast_features must be 'encoder' or 'decoder', got {contrast_features!r}")
        if contrast_features == "decoder" and not hasattr(self.decoder, "feature_channels"):
            raise ConfigError(f"contrast_features='decoder' needs a decoder with feature maps (UPerNetHead); "
                              f"{type(self.decoder).__name__} has none")
        self.contrast_features = contrast_features
        self.upsample_logits = upsample_logits

    @property
    def feature_channels(self) -> tuple[int, ...]:
        """Channels of each map in the ``features`` of :class:`SegOutput`."""
        if self.contrast_features == "decoder":
            return tuple(self.decoder.feature_channels)
        return tuple(self.encoder.channels)

    @property
    def feature_strides(self) -> tuple[int, ...]:
        """Stride of each map in the ``features`` of :class:`SegOutput` relative to the input (FPN maps keep the
        encoder's)."""
        return tuple(self.encoder.strides)

    def forward(self, image: Tensor) -> SegOutput:
        """Segment ``image`` ``(B, 3, H, W)``; logits (and auxiliary logits) are bilinearly upsampled to ``(H, W)``."""
        features = self.encoder(image)
        out = self.decoder(features)
        out = out if isinstance(out, DecoderOutput) else DecoderOutput(out)
        size = image.shape[-2:] if self.upsample_logits else out.logits.shape[-2:]
        logits = resize(out.logits, size)
        aux = None if out.aux_logits is None else resize(out.aux_logits, size)
        contrast = features if self.contrast_features == "encoder" else list(out.features or [])
        return SegOutput(logits=logits, aux_logits=aux, features=contrast)
