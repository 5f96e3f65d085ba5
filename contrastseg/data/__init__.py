"""Data modules and datasets. Items are dicts ``{"image": (3, H, W) float, "mask": (H, W) long, "name": str}``."""

from contrastseg.data.base import SegmentationDataModule, check_mask_values
from contrastseg.data.folder import FolderDataModule, FolderDataset
from contrastseg.data.synthetic import SYNTHETIC_CLASSES, render_scene
from contrastseg.data.synthetic_datamodule import SyntheticDataModule, SyntheticDataset
from contrastseg.data.transforms import to_tensors, train_transform

__all__ = [
    "SYNTHETIC_CLASSES", "FolderDataModule", "FolderDataset", "SegmentationDataModule", "SyntheticDataModule",
    "SyntheticDataset", "check_mask_values", "render_scene", "to_tensors", "train_transform",
]
