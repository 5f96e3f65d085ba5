"""CaDIS (cataract surgery, 25 videos): tasks 1/2/3 with 8/17/25 classes, video-level splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from contrastseg.data.dataset import SegmentationDataset, build_lut, default_palette, require_dir
from contrastseg.data.transforms import Transform
from contrastseg.errors import DataError

__all__ = ["CaDISDataset", "task_groups", "task_mapping"]

RAW_CLASSES = (
    "Pupil", "Surgical Tape", "Hand", "Eye Retractors", "Iris", "Skin", "Cornea", "Hydrodissection Cannula",
    "Viscoelastic Cannula", "Capsulorhexis Cystotome", "Rycroft Cannula", "Bonn Forceps", "Primary Knife",
    "Phacoemulsifier Handpiece", "Lens Injector", "I/A Handpiece", "Secondary Knife", "Micromanipulator",
    "I/A Handpiece Handle", "Capsulorhexis Forceps", "Rycroft Cannula Handle", "Phacoemulsifier Handpiece Handle",
    "Capsulorhexis Cystotome Handle", "Secondary Knife Handle", "Lens Injector Handle", "Suture Needle",
    "Needle Holder", "Charleux Cannula", "Primary Knife Handle", "Vitrectomy Handpiece", "Mendez Ring", "Marker",
    "Hydrodissection Cannula Handle", "Troutman Forceps", "Cotton", "Iris Hooks",
)
TASK2_GROUPS = {7: (7, 8, 10, 20, 27, 32), 8: (9, 22), 9: (11, 33), 10: (12, 28), 11: (13, 21), 12: (14, 24),
                13: (15, 18), 14: (16, 23), 15: (17,), 16: (19,)}
TASK2_NAMES = ("Cannula", "Cap. Cystotome", "Tissue Forceps", "Primary Knife", "Ph. Handpiece", "Lens Injector",
               "I/A Handpiece", "Secondary Knife", "Micromanipulator", "Cap. Forceps")
VIDEO_SPLITS = {
    "train": (1, 3, 4, 6, 8, 9, 10, 11, 13, 14, 15, 17, 18, 19, 20, 21, 23, 24, 25),
    "val": (5, 7, 16),
    "test": (2, 12, 22),
    "val_test": (5, 7, 16, 2, 12, 22),  # what the paper reports on
}
RARE = {1: (), 2: (9, 10, 12, 14, 16), 3: (11, 12, 14, 16, 18, 19, 20, 21, 22, 23, 24)}


def task_mapping(task: int) -> tuple[dict[int, int], tuple[str, ...]]:
    """Raw class -> train id (unlisted raw classes -> 255) and the class names of a task."""
    if task == 1:
        return {**{c: c for c in range(7)}, **{c: 7 for c in range(7, 36)}}, (*RAW_CLASSES[:7], "Instrument")
    if task == 2:
        mapping = {c: c for c in range(7)}
        for train_id, raws in TASK2_GROUPS.items():
            mapping.update({r: train_id for r in raws})
        return mapping, (*RAW_CLASSES[:7], *TASK2_NAMES)
    if task == 3:
        return {c: c for c in range(25)}, RAW_CLASSES[:25]
    raise DataError(f"CaDIS task must be 1, 2 or 3, got {task}")


def task_groups(task: int) -> dict[str, tuple[int, ...]]:
    """Metric class groups of a task: anatomies, others, instruments and (tasks 2 and 3) rare."""
    n = len(task_mapping(task)[1])
    groups = {"anatomies": (0, 4, 5, 6), "others": (1, 2, 3), "instruments": tuple(range(7, n))}
    return {**groups, **({"rare": RARE[task]} if RARE[task] else {})}


class CaDISDataset(SegmentationDataset):
    """``VideoXX/Images/*.png`` with ``VideoXX/Labels/*.png``; splits are sets of videos.

    Args:
        root: the folder holding ``Video01`` ... ``Video25``.
        split: ``train``, ``val``, ``test`` or ``val_test`` (the paper's evaluation set).
        transform: albumentations-style transform.
        task: 1, 2 or 3 (8, 17 or 25 classes).
    """

    ignore_index = 255
    layout = "ROOT/VideoXX/Images/<frame>.png and ROOT/VideoXX/Labels/<frame>.png (XX = 01..25)"
    splits = tuple(VIDEO_SPLITS)

    def __init__(self, root: str | Path, split: str = "train", transform: Transform | None = None, *,
                 task: int = 2) -> None:
        mapping, names = task_mapping(task)
        self.task, self.mapping = task, mapping
        self.num_classes, self.class_names = len(names), names  # type: ignore[misc]
        self.palette = default_palette(len(names))  # type: ignore[misc]
        self.class_groups = task_groups(task)  # type: ignore[misc]
        super().__init__(root, split, transform)

    def find_pairs(self, root: Path, split: str) -> list[tuple[Path, Path]]:
        pairs: list[tuple[Path, Path]] = []
        for video in VIDEO_SPLITS[split]:
            folder = require_dir(root / f"Video{video:02d}", self.layout)
            images = sorted(require_dir(folder / "Images", self.layout).glob("*.png"))
            labels = require_dir(folder / "Labels", self.layout)
            pairs += self.match_labels(images, lambda p, labels=labels: labels / p.name, labels.glob("*.png"))
        return pairs

    def label_lut(self) -> np.ndarray:
        # Raw classes 0..35 are known; those outside the task map to 255, anything else is an error.
        return build_lut({**{c: 255 for c in range(36)}, **self.mapping}, default=-1)

    @property
    def video_of(self) -> list[int]:
        """Video number of every frame (for per-video analysis)."""
        return [int(p[0].parent.parent.name[5:]) for p in self.pairs]
