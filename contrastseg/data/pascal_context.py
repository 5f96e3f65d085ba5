"""Pascal-Context (59 classes): label 0 (background) is ignored, v -> v - 1."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from contrastseg.data.dataset import SegmentationDataset, build_lut, default_palette, require_dir
from contrastseg.errors import DataError

__all__ = ["PascalContextDataset"]

PASCAL_CONTEXT_CLASSES = (
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle", "building", "bus",
    "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow", "cup", "curtain", "dog", "door",
    "fence", "floor", "flower", "food", "grass", "ground", "horse", "keyboard", "light", "motorbike", "mountain",
    "mouse", "person", "plate", "platform", "pottedplant", "road", "rock", "sheep", "shelves", "sidewalk", "sign",
    "sky", "snow", "sofa", "table", "track", "train", "tree", "truck", "tvmonitor", "wall", "water", "window", "wood",
)


class PascalContextDataset(SegmentationDataset):
    """``VOCdevkit/VOC2010/JPEGImages/*.jpg`` with ``SegmentationClassContext/*.png``, listed by split files.

    Args:
        root: the ``VOCdevkit/VOC2010`` folder (or a parent holding ``VOCdevkit``).
        split: ``train`` (4998 images) or ``val`` (5105).
        transform: albumentations-style transform.
    """

    num_classes = 59
    class_names = PASCAL_CONTEXT_CLASSES
    palette = default_palette(59)
    layout = ("ROOT/JPEGImages/*.jpg, ROOT/SegmentationClassContext/*.png and "
              "ROOT/ImageSets/SegmentationContext/{train,val}.txt (ROOT = VOCdevkit/VOC2010)")

    def find_pairs(self, root: Path, split: str) -> list[tuple[Path, Path]]:
        if (root / "VOCdevkit" / "VOC2010").is_dir():
            root = root / "VOCdevkit" / "VOC2010"
        split_file = require_dir(root / "ImageSets" / "SegmentationContext", self.layout) / f"{split}.txt"
        if not split_file.is_file():
            raise DataError(f"missing split list {split_file}; expected layout: {self.layout}")
        stems = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
        images_dir = require_dir(root / "JPEGImages", self.layout)
        labels_dir = require_dir(root / "SegmentationClassContext", self.layout)
        # The split list decides the split: a listed image that is missing is reported like an unpaired file; the
        # label folder holds every split's labels, so labels of other splits are not "labels without images".
        present = []
        for stem in stems:
            if (images_dir / f"{stem}.jpg").is_file():
                present.append(images_dir / f"{stem}.jpg")
            else:
                self.unmatched.append(f"{split_file} lists {stem} but {images_dir / (stem + '.jpg')} is missing")
        return self.match_labels(present, lambda p: labels_dir / f"{p.stem}.png")

    def label_lut(self) -> np.ndarray:
        return build_lut({0: 255, **{v: v - 1 for v in range(1, 60)}}, default=-1)
