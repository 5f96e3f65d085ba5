"""Segmentation models: timm encoders behind one contract, decoders that read their channels from it."""

from contrastseg.models.deeplab import DeepLabV3Head
from contrastseg.models.encoders import ENCODERS, Encoder, EncoderSpec, list_encoders
from contrastseg.models.hrnet import HRNetV2Head
from contrastseg.models.layers import DecoderOutput, FCNHead
from contrastseg.models.ocr import OCRHead
from contrastseg.models.segmentation import DecoderFactory, SegmentationModel, SegmentationNet, SegOutput
from contrastseg.models.upernet import UPerNetHead

__all__ = [
    "ENCODERS", "DecoderFactory", "DecoderOutput", "DeepLabV3Head", "Encoder", "EncoderSpec", "FCNHead",
    "HRNetV2Head", "OCRHead", "SegOutput", "SegmentationModel", "SegmentationNet", "UPerNetHead", "list_encoders",
]
