"""Your own data: image and label folders on disk (SegNet/CamVid layout by default)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from contrastseg.data.base import SegmentationDataModule
from contrastseg.data.dataset import SegmentationDataset, build_lut, default_palette, require_dir
from contrastseg.data.transforms import PaperTrainTransform, Transform, train_transform
from contrastseg.errors import ConfigError, DataError

__all__ = ["FolderDataModule", "FolderDataset"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def check_ignore_index(ignore_index: int, num_classes: int) -> None:
    """:class:`ConfigError` naming ``data.init_args.ignore_index`` unless it is a label value outside the classes."""
    if ignore_index < num_classes:
        raise ConfigError(f"data.init_args.ignore_index {ignore_index} is not outside the classes 0..{num_classes - 1}; "
                          "set it to a label value no class uses (e.g. 65535 with 16-bit label PNGs)")


class FolderDataset(SegmentationDataset):
    """Pairs ``root/<image_dir>/<stem>.<jpg|png|...>`` with ``root/<mask_dir>/<stem><mask_suffix>``.

    Hidden files in either folder (names starting with ``.``, such as the ``._<name>`` AppleDouble files macOS
    writes next to every file it copies to a foreign disk) are skipped. A label whose name differs from the expected
    one only in letter case (``a.PNG`` or ``A.png`` for ``a.png``) is matched; two such labels for one image, or two
    images with one stem (``a.jpg`` and ``a.png``), are an error naming both files.

    Args:
        root: dataset root.
        split: split name, substituted for ``{split}`` in the folder patterns.
        num_classes: number of classes; labels must be in ``0..num_classes-1`` or ``ignore_index`` after mapping.
        image_dir: image folder pattern relative to ``root``.
        mask_dir: label folder pattern relative to ``root``.
        mask_suffix: label file ending.
        label_map: raw label value -> training id or ``ignore_index`` (e.g. ``{11: 255}`` for CamVid's
            "unlabelled"); values it does not list are kept.
        class_names: one name per class (``None``: ``class_0`` ...).
        transform: albumentations-style transform applied before normalisation.
        ignore_index: the label value of pixels without a class (255); not one of ``0..num_classes-1``. Masks are
            uint8 when the classes and ``ignore_index`` fit a byte, int32 otherwise.
        allow_jpeg_labels: accept JPEG label files (refused by default: lossy compression turns class values near
            edges into other valid classes). A JPEG is recognised by its bytes, whatever its suffix.

    Raises:
        ConfigError: ``ignore_index`` is negative or one of the classes.
        DataError: the folders are missing (the message shows the expected layout), empty, or an image has no
            label or a label no image (the unpaired files are named).
    """

    def __init__(
        self, root: str | Path, split: str = "train", transform: Transform | None = None, *, num_classes: int,
        image_dir: str = "{split}", mask_dir: str = "{split}annot", mask_suffix: str = ".png",
        label_map: Mapping[int, int] | None = None, class_names: Sequence[str] | None = None,
        ignore_index: int = 255, allow_jpeg_labels: bool = False,
    ) -> None:
        check_ignore_index(ignore_index, num_classes)
        self.ignore_index, self.allow_jpeg_labels = ignore_index, allow_jpeg_labels  # type: ignore[misc]
        self.num_classes = num_classes  # type: ignore[misc]
        self.class_names = tuple(class_names) if class_names else tuple(f"class_{i}" for i in range(num_classes))  # type: ignore[misc]
        self.palette = default_palette(num_classes)  # type: ignore[misc]
        self.image_dir, self.mask_dir, self.mask_suffix, self.label_map = image_dir, mask_dir, mask_suffix, label_map
        self.splits = (split,)  # type: ignore[misc]
        self.layout = (f"{root}/{image_dir.format(split=split)}/<stem>.jpg|png and "  # type: ignore[misc]
                       f"{root}/{mask_dir.format(split=split)}/<stem>{mask_suffix}")
        super().__init__(root, split, transform)

    def find_pairs(self, root: Path, split: str) -> list[tuple[Path, Path]]:
        image_folder = require_dir(root / self.image_dir.format(split=split), self.layout)
        mask_folder = require_dir(root / self.mask_dir.format(split=split), self.layout)
        images = sorted(p for p in image_folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        suffix = self.mask_suffix.casefold()
        labels = [p for p in mask_folder.iterdir() if p.name.casefold().endswith(suffix)]
        return self.match_labels(images, lambda p: mask_folder / f"{p.stem}{self.mask_suffix}", labels)

    def label_lut(self) -> np.ndarray | None:
        return build_lut(self.label_map) if self.label_map else None


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
        label_map: raw label -> training id or ``ignore_index``, e.g. ``{11: 255}``.
        ignore_index: label value of unlabelled pixels (255), linked into the model; must be ``>= num_classes``
            (e.g. 65535 with 16-bit labels when 255 is a class).
        train_split: split used for training.
        val_split: split used for validation.
        test_split: split used for ``test`` (``None``: the validation split).
        crop_size: ``(height, width)`` of training crops.
        scale_range: random rescale range of training images.
        allow_jpeg_labels: accept JPEG label files (refused by default: lossy compression invents class values).
        **loader_kwargs: see :class:`~contrastseg.data.base.SegmentationDataModule`.
    """

    def __init__(
        self, *, root: str, num_classes: int, class_names: Sequence[str] | None = None,
        image_dir: str = "{split}", mask_dir: str = "{split}annot", mask_suffix: str = ".png",
        label_map: dict[int, int] | None = None, ignore_index: int = 255, train_split: str = "train",
        val_split: str = "val", test_split: str | None = None, crop_size: Sequence[int] = (512, 512),
        scale_range: Sequence[float] = (0.5, 2.0), allow_jpeg_labels: bool = False, batch_size: int = 8,
        val_batch_size: int | None = 1, num_workers: int = 4, pin_memory: bool = True,
        persistent_workers: bool = True, seed: int | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, val_batch_size=val_batch_size, num_workers=num_workers,
                         pin_memory=pin_memory, persistent_workers=persistent_workers, seed=seed)
        if not Path(root).expanduser().is_dir():
            raise DataError(f"data root {root!r} does not exist; expected {root}/{image_dir.format(split='train')}"
                            f"/ and {root}/{mask_dir.format(split='train')}/")
        if class_names is not None and len(class_names) != num_classes:
            raise DataError(f"class_names has {len(class_names)} entries but num_classes is {num_classes}")
        check_ignore_index(ignore_index, num_classes)
        self.root, self.num_classes, self.ignore_index = root, num_classes, ignore_index
        self.class_names = self._names(class_names, num_classes)
        self.palette = default_palette(num_classes)
        self.crop_size, self.scale_range = tuple(crop_size), tuple(scale_range)
        self.splits = {"train": train_split, "val": val_split, "test": test_split or val_split}
        self.dataset_kwargs = dict(num_classes=num_classes, image_dir=image_dir, mask_dir=mask_dir,
                                   mask_suffix=mask_suffix, label_map=label_map, class_names=self.class_names,
                                   ignore_index=ignore_index, allow_jpeg_labels=allow_jpeg_labels)

    def make_dataset(self, split: str, transform: Any = None) -> FolderDataset:
        return FolderDataset(self.root, self.splits[split], transform=transform, **self.dataset_kwargs)

    def train_transform(self) -> PaperTrainTransform:
        return train_transform(self.crop_size, scale_range=self.scale_range, ignore_index=self.ignore_index)
