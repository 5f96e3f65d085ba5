"""The shared data-module base: loaders, worker settings and the dataset facts the model is linked to."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from contrastseg.errors import DataError

__all__ = ["SegmentationDataModule", "check_mask_values"]


def check_mask_values(mask: np.ndarray, num_classes: int, ignore_index: int, source: str) -> None:
    """Raise :class:`DataError` naming the value and ``source`` if ``mask`` holds a label outside the classes."""
    bad = (mask >= num_classes) & (mask != ignore_index)
    if bad.any():
        values = sorted(set(np.unique(mask[bad]).tolist()))
        raise DataError(
            f"label value {values[0]} in {source} is outside 0..{num_classes - 1} (ignore {ignore_index}); "
            f"all unexpected values: {values[:10]}. Check num_classes or the label mapping"
        )


class SegmentationDataModule(LightningDataModule):
    """Base class: subclasses fill ``self.datasets`` in :meth:`setup` and set the class facts in ``__init__``.

    The CLI links ``num_classes``, ``ignore_index`` and ``class_names`` from the data module into the model, so
    they must be known right after construction.

    Args:
        batch_size: images per batch per process (per GPU under DDP).
        val_batch_size: images per validation/test batch (``None``: same as ``batch_size``).
        num_workers: loader worker processes.
        pin_memory: pin host memory for faster host-to-GPU copies.
        persistent_workers: keep workers alive between epochs (only with ``num_workers > 0``).
    """

    num_classes: int
    ignore_index: int = 255
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...] | None = None
    class_groups: dict[str, tuple[int, ...]] = {}  # noqa: RUF012 - read-only default; metrics per group

    def __init__(
        self, *, batch_size: int = 8, val_batch_size: int | None = None, num_workers: int = 2,
        pin_memory: bool = True, persistent_workers: bool = True,
    ) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.val_batch_size = batch_size if val_batch_size is None else val_batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory and torch.cuda.is_available()  # pinning without a GPU only warns
        self.persistent_workers = persistent_workers and num_workers > 0
        self.datasets: dict[str, Dataset] = {}

    _STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}

    def make_dataset(self, split: str, transform: Any = None) -> Dataset:  # pragma: no cover - abstract
        """The dataset behind loader key ``split`` (``train``/``val``/``test``); subclasses implement it."""
        raise NotImplementedError

    def train_transform(self) -> Any:
        """The augmentation of the training split (``None``: none)."""
        return None

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets the stage needs, once each."""
        for key in self._STAGE_SPLITS.get(stage or "fit", ("train", "val", "test")):
            if key not in self.datasets:
                self.datasets[key] = self.make_dataset(key, self.train_transform() if key == "train" else None)

    def _loader(self, split: str, *, train: bool) -> DataLoader:
        if split not in self.datasets:
            raise DataError(f"{type(self).__name__} has no {split!r} split (available: {sorted(self.datasets)})")
        return DataLoader(
            self.datasets[split], batch_size=self.batch_size if train else self.val_batch_size, shuffle=train,
            drop_last=train, num_workers=self.num_workers, pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test" if "test" in self.datasets else "val", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    @staticmethod
    def _names(class_names: Sequence[str] | None, num_classes: int) -> tuple[str, ...]:
        return tuple(class_names) if class_names else tuple(f"class_{i}" for i in range(num_classes))
