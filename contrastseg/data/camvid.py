"""CamVid (11 classes) in SegNet's layout; 11 ("unlabelled") is ignored."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from contrastseg.data.dataset import SegmentationDataset, build_lut, require_dir

__all__ = ["CamVidDataset"]


class CamVidDataset(SegmentationDataset):
    """``{split}/*.jpg|png`` with ``{split}annot/*.png`` (same stems).

    Args:
        root: the folder holding ``train/``, ``trainannot/``, ``val/``, ``valannot/`` (``test/`` optional).
        split: ``train``, ``val`` or ``test``.
        transform: albumentations-style transform.
    """

    num_classes = 11
    class_names = ("sky", "building", "pole", "road", "pavement", "tree", "sign/symbol", "fence", "car",
                   "pedestrian", "bicyclist")
    palette = ((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
               (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192))
    class_groups = {"rare": (2, 6, 7, 9, 10)}
    layout = "ROOT/{split}/<stem>.jpg|png and ROOT/{split}annot/<stem>.png (test/ and testannot/ optional)"
    splits = ("train", "val", "test")
    optional_splits = ("test",)

    @classmethod
    def split_present(cls, root: Path, split: str) -> bool:
        return (root / split).exists() or (root / f"{split}annot").exists()

    def find_pairs(self, root: Path, split: str) -> list[tuple[Path, Path]]:
        images = sorted(p for p in require_dir(root / split, self.layout).iterdir()
                        if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        labels = require_dir(root / f"{split}annot", self.layout)
        return self.match_labels(images, lambda p: labels / f"{p.stem}.png",
                                 [p for p in labels.iterdir() if p.suffix.lower() == ".png"])

    def label_lut(self) -> np.ndarray:
        return build_lut({11: 255})
