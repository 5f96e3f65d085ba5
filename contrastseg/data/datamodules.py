"""Data modules of the paper's datasets (and CamVid), on one shared implementation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from contrastseg.data.ade20k import ADE20KDataset
from contrastseg.data.base import SegmentationDataModule
from contrastseg.data.cadis import CaDISDataset, task_groups, task_mapping
from contrastseg.data.camvid import CamVidDataset
from contrastseg.data.cityscapes import CityscapesDataset
from contrastseg.data.dataset import SegmentationDataset, default_palette
from contrastseg.data.pascal_context import PascalContextDataset
from contrastseg.data.repeat_factor import RepeatFactorSampler, class_presence, repeat_factors
from contrastseg.data.transforms import PaperTrainTransform
from contrastseg.errors import DataError

__all__ = ["ADE20KDataModule", "CaDISDataModule", "CamVidDataModule", "CityscapesDataModule", "DatasetDataModule",
           "PascalContextDataModule"]


class DatasetDataModule(SegmentationDataModule):
    """A dataset on disk in its official layout, with the paper's training augmentation.

    Args:
        root: dataset root (must exist; the error shows the expected layout).
        crop_size: training crop ``(height, width)``; ``None``: the dataset's paper crop.
        scale_range: random rescale range (0.5, 2.0).
        cat_max_ratio: crop retries until no class exceeds this share (0.75).
        val_split: split for validation.
        test_split: split for ``test`` (``None``: the validation split).
        repeat_factor_threshold: ``t`` of repeat-factor sampling for training (``None``: plain shuffling).
        cache_dir: where class-presence statistics for repeat-factor sampling are cached (``None``:
            ``~/.cache/contrastseg``).
        seed: seed of the training order, augmentation and repeat-factor draws (``None``: the run's
            ``seed_everything``).
        batch_size: training images per process.
        val_batch_size: validation images per process (1: images may differ in size).
        num_workers: loader workers.
        pin_memory: pin host memory.
        persistent_workers: keep workers between epochs.
    """

    dataset_class: ClassVar[type[SegmentationDataset]]
    default_crop: ClassVar[tuple[int, int]] = (512, 512)

    def __init__(
        self, *, root: str, crop_size: Sequence[int] | None = None, scale_range: Sequence[float] = (0.5, 2.0),
        cat_max_ratio: float = 0.75, val_split: str = "val", test_split: str | None = None,
        repeat_factor_threshold: float | None = None, cache_dir: str | None = None, seed: int | None = None,
        batch_size: int = 8, val_batch_size: int = 1, num_workers: int = 4, pin_memory: bool = True,
        persistent_workers: bool = True,
    ) -> None:
        super().__init__(batch_size=batch_size, val_batch_size=val_batch_size, num_workers=num_workers,
                         pin_memory=pin_memory, persistent_workers=persistent_workers, seed=seed)
        if not Path(root).expanduser().is_dir():
            raise DataError(f"data root {root!r} does not exist; expected layout: {self.dataset_class.layout}")
        self.root = root
        self.crop_size = tuple(crop_size) if crop_size else self.default_crop
        self.scale_range, self.cat_max_ratio = tuple(scale_range), cat_max_ratio
        self.splits = {"train": "train", "val": val_split, "test": test_split or val_split}
        self.repeat_factor_threshold, self.cache_dir = repeat_factor_threshold, cache_dir
        self._set_class_facts()

    def _set_class_facts(self) -> None:
        cls = self.dataset_class
        self.num_classes, self.class_names, self.palette = cls.num_classes, cls.class_names, cls.palette
        self.class_groups = dict(cls.class_groups)

    def make_dataset(self, split: str, transform: Any = None) -> SegmentationDataset:
        """The dataset behind loader key ``split`` (override to pass extra options)."""
        return self.dataset_class(self.root, self.splits[split], transform)

    def train_transform(self) -> PaperTrainTransform:
        return PaperTrainTransform(self.crop_size, scale_range=self.scale_range, cat_max_ratio=self.cat_max_ratio,
                                   ignore_index=self.ignore_index)

    def train_sampler(self, dataset: Any, num_replicas: int, rank: int) -> Any:
        if self.repeat_factor_threshold is None:
            return super().train_sampler(dataset, num_replicas, rank)
        presence = class_presence(dataset, self.num_classes, cache_dir=self.cache_dir)
        return RepeatFactorSampler(repeat_factors(presence, self.repeat_factor_threshold), seed=self.order_seed,
                                   num_replicas=num_replicas, rank=rank)


class CityscapesDataModule(DatasetDataModule):
    """Cityscapes, 19 classes; training crops 512x1024 as the paper."""

    dataset_class = CityscapesDataset
    default_crop = (512, 1024)


class ADE20KDataModule(DatasetDataModule):
    """ADE20K, 150 classes; training crops 512x512."""

    dataset_class = ADE20KDataset
    default_crop = (512, 512)


class PascalContextDataModule(DatasetDataModule):
    """Pascal-Context, 59 classes; training crops 480x480."""

    dataset_class = PascalContextDataset
    default_crop = (480, 480)


class CamVidDataModule(DatasetDataModule):
    """CamVid, 11 classes (SegNet layout); training crops 352x480."""

    dataset_class = CamVidDataset
    default_crop = (352, 480)


class CaDISDataModule(DatasetDataModule):
    """CaDIS with ``task`` 1/2/3; repeat-factor sampling (t = 0.15) on by default; evaluation on val + test videos.

    Args:
        task: 1, 2 or 3 (8, 17 or 25 classes).
        **kwargs: see :class:`DatasetDataModule`.
    """

    dataset_class = CaDISDataset
    default_crop = (540, 960)

    def __init__(self, *, task: int = 2, repeat_factor_threshold: float | None = 0.15, val_split: str = "val_test",
                 **kwargs: Any) -> None:
        self.task = task
        super().__init__(repeat_factor_threshold=repeat_factor_threshold, val_split=val_split, **kwargs)

    def _set_class_facts(self) -> None:
        _, names = task_mapping(self.task)
        self.num_classes, self.class_names, self.palette = len(names), names, default_palette(len(names))
        self.class_groups = task_groups(self.task)  # the dataset's groups, rare included (tasks 2 and 3)

    def make_dataset(self, split: str, transform: Any = None) -> SegmentationDataset:
        return CaDISDataset(self.root, self.splits[split], transform, task=self.task)
