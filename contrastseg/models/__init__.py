"""Segmentation models: timm encoders behind one contract, decoders that read their channels from it."""

from contrastseg.models.encoders import ENCODERS, Encoder, EncoderSpec, list_encoders
from contrastseg.models.hrnet import HRNetV2Head
from contrastseg.models.segmentation import DecoderFactory, SegmentationModel, SegOutput

__all__ = [
    "ENCODERS", "DecoderFactory", "Encoder", "EncoderSpec", "HRNetV2Head", "SegOutput", "SegmentationModel",
    "list_encoders",
]
