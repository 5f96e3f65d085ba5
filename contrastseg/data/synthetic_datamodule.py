"""The quickstart data module: procedurally generated scenes (see :mod:`contrastseg.data.synthetic`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from contrastseg.data.base import SegmentationDataModule
from contrastseg.data.synthetic import SYNTHETIC_CLASSES, SYNTHETIC_PALETTE, render_scene
from contrastseg.data.transforms import Transform, to_tensors

__all__ = ["SyntheticDataModule", "SyntheticDataset"]

_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


class SyntheticDataset(Dataset):
    """``num_samples`` scenes of ``image_size``; item ``i`` of a split is a pure function of ``(seed, split, i)``.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` (disjoint streams of scenes).
        num_samples: number of scenes in the split.
        image_size: ``(height, width)``.
        seed: base seed of the scene stream.
        transform: optional albumentations-style transform applied before normalisation.
    """

    num_classes = len(SYNTHETIC_CLASSES)
    ignore_index = 255
    class_names = SYNTHETIC_CLASSES
    palette = SYNTHETIC_PALETTE

    def __init__(
        self, split: str = "train", *, num_samples: int = 512, image_size: Sequence[int] = (128, 128), seed: int = 0,
        transform: Transform | None = None,
    ) -> None:
        if split not in _SPLIT_IDS:
            raise ValueError(f"split must be one of {sorted(_SPLIT_IDS)}, got {split!r}")
        self.split, self.num_samples, self.seed, self.transform = split, num_samples, seed, transform
        self.image_size = (int(image_size[0]), int(image_size[1]))

    @property
    def cache_key(self) -> tuple:
        """What determines the labels (for cached label statistics)."""
        return ("synthetic", self.split, self.num_samples, self.image_size, self.seed)

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.num_samples:
            raise IndexError(index)
        rng = np.random.default_rng((self.seed, _SPLIT_IDS[self.split], index))
        image, mask = render_scene(rng, *self.image_size)
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        x, y = to_tensors(image, mask)
        return {"image": x, "mask": y, "name": f"synthetic/{self.split}/{index:05d}"}


class SyntheticDataModule(SegmentationDataModule):
    """Built-in scenes with 8 classes (sky, ground, water, building, car, person, pole, sign); no download.

    Args:
        num_train: training scenes.
        num_val: validation scenes.
        num_test: test scenes, a stream of their own (``None``: as many as ``num_val``); ``test`` and ``predict``
            never see the validation scenes.
        image_size: ``(height, width)`` of every scene.
        seed: seed of the scene streams (the scenes themselves; the training order follows the run's
            ``seed_everything``).
        hflip: random horizontal flips for training (the scenes are already random; this only adds variety).
        **loader_kwargs: see :class:`~contrastseg.data.base.SegmentationDataModule`.
    """

    num_classes = SyntheticDataset.num_classes
    class_names = SyntheticDataset.class_names
    palette = SyntheticDataset.palette
    class_groups = {"stuff": (0, 1, 2), "things": (3, 4, 5), "small": (5, 6, 7)}  # noqa: RUF012

    def __init__(
        self, *, num_train: int = 512, num_val: int = 64, num_test: int | None = None,
        image_size: Sequence[int] = (128, 128), seed: int = 0, hflip: bool = True, batch_size: int = 8,
        val_batch_size: int | None = None, num_workers: int = 2, pin_memory: bool = True,
        persistent_workers: bool = True,
    ) -> None:
        super().__init__(batch_size=batch_size, val_batch_size=val_batch_size, num_workers=num_workers,
                         pin_memory=pin_memory, persistent_workers=persistent_workers)
        self.scene_seed = seed
        self.num_train, self.num_val, self.image_size, self.hflip = num_train, num_val, tuple(image_size), hflip
        self.num_test = num_val if num_test is None else num_test

    def make_dataset(self, split: str, transform: Any = None) -> SyntheticDataset:
        n = {"train": self.num_train, "val": self.num_val, "test": self.num_test}[split]
        return SyntheticDataset(split, num_samples=n, image_size=self.image_size, seed=self.scene_seed,
                                transform=transform)

    def train_transform(self) -> Any:
        return _hflip if self.hflip else None


def _hflip(*, image: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    # numpy is seeded per item by the training loader (contrastseg.data.resumable): a reproducible coin.
    if np.random.random() < 0.5:
        return {"image": image[:, ::-1], "mask": mask[:, ::-1]}
    return {"image": image, "mask": mask}
