"""Cityscapes (19 classes), official layout, labelIds remapped to trainIds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from contrastseg.data.dataset import SegmentationDataset, build_lut, require_dir

__all__ = ["CityscapesDataset"]

# labelId -> trainId (the official table); every other id is ignore.
LABEL_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
                  27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


class CityscapesDataset(SegmentationDataset):
    """``leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png`` with ``gtFine/{split}/{city}/{stem}_gtFine_labelIds.png``.

    Args:
        root: the folder holding ``leftImg8bit/`` and ``gtFine/``.
        split: ``train``, ``val`` or ``test``.
        transform: albumentations-style transform.
    """

    num_classes = 19
    class_names = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                   "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
                   "bicycle")
    palette = ((128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
               (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
               (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32))
    class_groups = {"flat": (0, 1), "construction": (2, 3, 4), "object": (5, 6, 7), "nature": (8, 9), "sky": (10,),
                    "human": (11, 12), "vehicle": (13, 14, 15, 16, 17, 18)}
    layout = "ROOT/leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png and ROOT/gtFine/{split}/{city}/{stem}_gtFine_labelIds.png"
    splits = ("train", "val", "test")
    unannotated_splits = ("test",)  # gtFine/test holds dummy annotations (every pixel ignored)

    def find_pairs(self, root: Path, split: str) -> list[tuple[Path, Path]]:
        images_dir = require_dir(root / "leftImg8bit" / split, self.layout)
        labels_dir = require_dir(root / "gtFine" / split, self.layout)
        images = sorted(images_dir.glob("*/*_leftImg8bit.png"))

        def label_for(image: Path) -> Path:
            stem = image.name[: -len("_leftImg8bit.png")]
            return labels_dir / image.parent.name / f"{stem}_gtFine_labelIds.png"

        return self.match_labels(images, label_for, labels_dir.glob("*/*_gtFine_labelIds.png"))

    def label_lut(self) -> np.ndarray:
        # Known ids 0..33 (and 255 as written by some tools); those without a train id are ignored.
        return build_lut({**{i: 255 for i in range(34)}, 255: 255, **LABEL_TO_TRAIN}, default=-1)
