"""ADE20K SceneParsing (150 classes): label 0 ("other") is ignored, v -> v - 1."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from contrastseg.data.dataset import SegmentationDataset, build_lut, default_palette, require_dir

__all__ = ["ADE20KDataset"]

ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path",
    "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase",
    "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light",
    "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver", "airplane",
    "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool",
    "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture",
    "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)


class ADE20KDataset(SegmentationDataset):
    """``ADEChallengeData2016/images/{training,validation}/*.jpg`` and ``annotations/.../*.png``.

    Args:
        root: the ``ADEChallengeData2016`` folder (or its parent).
        split: ``train`` (``training``) or ``val`` (``validation``).
        transform: albumentations-style transform.
    """

    num_classes = 150
    class_names = ADE20K_CLASSES
    palette = default_palette(150)
    layout = "ROOT/images/{training,validation}/*.jpg and ROOT/annotations/{training,validation}/*.png"

    def find_pairs(self, root: Path, split: str) -> list[tuple[Path, Path]]:
        if (root / "ADEChallengeData2016").is_dir():
            root = root / "ADEChallengeData2016"
        folder = {"train": "training", "val": "validation"}[split]
        images = sorted(require_dir(root / "images" / folder, self.layout).glob("*.jpg"))
        labels = require_dir(root / "annotations" / folder, self.layout)
        return self.match_labels(images, lambda p: labels / f"{p.stem}.png", labels.glob("*.png"))

    def label_lut(self) -> np.ndarray:
        return build_lut({0: 255, **{v: v - 1 for v in range(1, 151)}}, default=-1)
