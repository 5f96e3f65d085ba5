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
    layout = "ROOT/{split}/<stem>.jpg|png and ROOT/{split}annot/<stem>.png"
    splits = ("train", "val", "test")

    def find_pairs(self, root: Path, split: str) -> list[tuple[Path, Path]]:
        images = sorted(p for p in require_dir(root / split, self.layout).iterdir()
                        if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        labels = require_dir(root / f"{split}annot", self.layout)
        return self.match_labels(images, lambda p: labels / f"{p.stem}.png", self.layout)

    def label_lut(self) -> np.ndarray:
        return build_lut({11: 255})
