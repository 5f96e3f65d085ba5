"""Data modules and datasets. Items are dicts ``{"image": (3, H, W) float, "mask": (H, W) long, "name": str}``."""

from contrastseg.data.ade20k import ADE20KDataset
from contrastseg.data.base import SegmentationDataModule
from contrastseg.data.cadis import CaDISDataset
from contrastseg.data.camvid import CamVidDataset
from contrastseg.data.cityscapes import CityscapesDataset
from contrastseg.data.datamodules import (
    ADE20KDataModule,
    CaDISDataModule,
    CamVidDataModule,
    CityscapesDataModule,
    DatasetDataModule,
    PascalContextDataModule,
)
from contrastseg.data.dataset import SegmentationDataset
from contrastseg.data.folder import FolderDataModule, FolderDataset
from contrastseg.data.pascal_context import PascalContextDataset
from contrastseg.data.repeat_factor import RepeatFactorSampler, class_presence, repeat_factors
from contrastseg.data.synthetic import SYNTHETIC_CLASSES
from contrastseg.data.synthetic_datamodule import SyntheticDataModule, SyntheticDataset
from contrastseg.data.transforms import PaperTrainTransform, to_tensors, train_transform

__all__ = [
    "SYNTHETIC_CLASSES", "ADE20KDataModule", "ADE20KDataset", "CaDISDataModule", "CaDISDataset",
    "CamVidDataModule", "CamVidDataset", "CityscapesDataModule", "CityscapesDataset", "DatasetDataModule",
    "FolderDataModule", "FolderDataset", "PaperTrainTransform", "PascalContextDataModule",
    "PascalContextDataset", "RepeatFactorSampler", "SegmentationDataModule", "SegmentationDataset",
    "SyntheticDataModule", "SyntheticDataset", "class_presence", "repeat_factors", "to_tensors",
    "train_transform",
]
