"""Your own data: image and label folders on disk (SegNet/CamVid layout by default)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from torch.utils.data import Dataset

from contrastseg.data.base import SegmentationDataModule, check_mask_values
from contrastseg.data.transforms import Transform, to_tensors, train_transform
from contrastseg.errors import DataError

__all__ = ["FolderDataModule", "FolderDataset", "read_image", "read_mask"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def read_image(path: Path) -> np.ndarray:
    """Decode an image file to ``(H, W, 3)`` uint8 RGB with OpenCV; :class:`DataError` names a corrupt file."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"cannot decode image {path} (missing, corrupt or not an image)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_mask(path: Path) -> np.ndarray:
    """Decode a label PNG to ``(H, W)`` integers; a colour (RGB) label map is an error naming the file."""
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise DataError(f"cannot decode label {path} (missing, corrupt or not an image)")
    if mask.ndim != 2:
        raise DataError(f"label {path} has shape {mask.shape}; expected a single-channel map of class indices")
    return mask


def build_lut(label_map: Mapping[int, int] | None, max_value: int = 65536) -> np.ndarray | None:
    """A lookup table ``raw -> train id`` (identity where unmapped), applied once per mask with ``lut[mask]``."""
    if not label_map:
        return None
    lut = np.arange(max_value, dtype=np.int64)
    for raw, train in label_map.items():
        lut[int(raw)] = int(train)
    return lut


class FolderDataset(Dataset):
    """Pairs ``root/<image_dir>/<stem>.<jpg|png|...>`` with ``root/<mask_dir>/<stem><mask_suffix>``.

    Args:
        root: dataset root.
        split: split name, substituted for ``{split}`` in the folder patterns.
        num_classes: number of classes; labels must be in ``0..num_classes-1`` or ``ignore_index`` after mapping.
        image_dir: image folder pattern relative to ``root``.
        mask_dir: label folder pattern relative to ``root``.
        mask_suffix: label file ending.
        label_map: raw label value -> training id (e.g. ``{11: 255}`` for CamVid's "unlabelled").
        ignore_index: the ignore value.
        transform: albumentations-style transform applied before normalisation.

    Raises:
        DataError: the folders are missing (the message shows the expected layout), empty, or an image has no
            label (the first missing label is named).
    """

    def __init__(
        self, root: str | Path, split: str = "train", *, num_classes: int, image_dir: str = "{split}",
        mask_dir: str = "{split}annot", mask_suffix: str = ".png", label_map: Mapping[int, int] | None = None,
        ignore_index: int = 255, transform: Transform | None = None,
    ) -> None:
        self.root = Path(root).expanduser()
        self.split, self.num_classes, self.ignore_index, self.transform = split, num_classes, ignore_index, transform
        image_folder = self.root / image_dir.format(split=split)
        mask_folder = self.root / mask_dir.format(split=split)
        layout = (f"expected layout: {self.root}/{image_dir.format(split=split)}/<stem>.jpg|png and "
                  f"{self.root}/{mask_dir.format(split=split)}/<stem>{mask_suffix}")
        for folder in (self.root, image_folder, mask_folder):
            if not folder.is_dir():
                raise DataError(f"missing folder {folder}; {layout}")
        self.images = sorted(p for p in image_folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.images:
            raise DataError(f"no images in {image_folder}; {layout}")
        self.masks = [mask_folder / f"{p.stem}{mask_suffix}" for p in self.images]
        for image, mask in zip(self.images, self.masks):
            if not mask.is_file():
                raise DataError(f"image {image} has no label: missing {mask}; {layout}")
        self.lut = build_lut(label_map)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, mask = read_image(self.images[index]), read_mask(self.masks[index])
        if mask.shape != image.shape[:2]:
            raise DataError(f"label {self.masks[index]} is {mask.shape} but image {self.images[index]} is "
                            f"{image.shape[:2]}")
        if self.lut is not None:
            mask = self.lut[mask]
        check_mask_values(mask, self.num_classes, self.ignore_index, str(self.masks[index]))
        mask = mask.astype(np.uint8 if self.ignore_index < 256 else np.int32)
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        x, y = to_tensors(image, mask)
        return {"image": x, "mask": y, "name": str(self.images[index])}


class FolderDataModule(SegmentationDataModule):
    """Train on any folder of images and label maps; the default layout is SegNet's (CamVid).

    Example (CamVid as shipped with SegNet: ``train/``, ``trainannot/``, ``val/``, ``valannot/``)::

        data = FolderDataModule(root="data/camvid", num_classes=11, label_map={11: 255}, crop_size=(352, 480))

    Args:
        root: dataset root (must exist).
        num_classes: number of classes after ``label_map``.
        class_names: one name per class (``None``: ``class_0`` ...).
        image_dir: image folder pattern, ``{split}`` is replaced by the split name.
        mask_dir: label folder pattern.
        mask_suffix: label file ending.
        label_map: raw label -> training id, e.g. ``{11: 255}``.
        train_split: split used for training.
        val_split: split used for validation.
        test_split: split used for ``test`` (``None``: the validation split).
        crop_size: ``(height, width)`` of training crops.
        scale_range: random rescale range of training images.
        **loader_kwargs: see :class:`~contrastseg.data.base.SegmentationDataModule`.
    """

    def __init__(
        self, *, root: str, num_classes: int, class_names: Sequence[str] | None = None,
        image_dir: str = "{split}", mask_dir: str = "{split}annot", mask_suffix: str = ".png",
        label_map: dict[int, int] | None = None, train_split: str = "train", val_split: str = "val",
        test_split: str | None = None, crop_size: Sequence[int] = (512, 512),
        scale_range: Sequence[float] = (0.5, 2.0), batch_size: int = 8, val_batch_size: int | None = 1,
        num_workers: int = 4, pin_memory: bool = True, persistent_workers: bool = True,
    ) -> None:
        super().__init__(batch_size=batch_size, val_batch_size=val_batch_size, num_workers=num_workers,
                         pin_memory=pin_memory, persistent_workers=persistent_workers)
        if not Path(root).expanduser().is_dir():
            raise DataError(f"data root {root!r} does not exist; expected {root}/{image_dir.format(split='train')}"
                            f"/ and {root}/{mask_dir.format(split='train')}/")
        if class_names is not None and len(class_names) != num_classes:
            raise DataError(f"class_names has {len(class_names)} entries but num_classes is {num_classes}")
        self.root, self.num_classes = root, num_classes
        self.class_names = self._names(class_names, num_classes)
        self.crop_size, self.scale_range = tuple(crop_size), tuple(scale_range)
        self.splits = {"train": train_split, "val": val_split, "test": test_split or val_split}
        self.dataset_kwargs = dict(num_classes=num_classes, image_dir=image_dir, mask_dir=mask_dir,
                                   mask_suffix=mask_suffix, label_map=label_map, ignore_index=self.ignore_index)

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for key in wanted.get(stage or "fit", ("train", "val", "test")):
            if key not in self.datasets:
                transform = train_transform(self.crop_size, scale_range=self.scale_range) if key == "train" else None
                self.datasets[key] = FolderDataset(self.root, self.splits[key], transform=transform,
                                                   **self.dataset_kwargs)
