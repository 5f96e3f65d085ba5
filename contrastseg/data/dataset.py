"""The shared Dataset base: (image, label) file pairs, a raw-to-train lookup table, checks that name the file."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torch.utils.data import Dataset

from contrastseg.data.base import check_mask_values
from contrastseg.data.files import is_hidden, read_image, read_mask
from contrastseg.data.transforms import Transform, to_tensors
from contrastseg.errors import DataError

__all__ = ["SegmentationDataset", "build_lut", "default_palette", "read_image", "read_mask", "require_dir"]


def build_lut(mapping: Mapping[int, int] | None, *, default: int | None = None, size: int = 65536) -> np.ndarray:
    """Lookup table ``raw -> train id``: identity where unmapped, or ``default`` when given.

    ``default=-1`` marks raw values outside the dataset's known set: loading a mask that holds one is an error
    naming the value and the file, never a silent ignore.
    """
    lut = np.arange(size, dtype=np.int64) if default is None else np.full(size, default, dtype=np.int64)
    for raw, train in (mapping or {}).items():
        lut[int(raw)] = int(train)
    return lut


def default_palette(num_classes: int) -> tuple[tuple[int, int, int], ...]:
    """A fixed, well-spread colour per class (for datasets without an official palette)."""
    rng = np.random.default_rng(1234)
    return tuple(tuple(int(v) for v in rng.integers(32, 256, 3)) for _ in range(num_classes))


def require_dir(path: Path, layout: str) -> Path:
    """``path`` if it is a folder, else a :class:`~contrastseg.errors.DataError` naming it and the layout."""
    if not path.is_dir():
        raise DataError(f"missing folder {path}; expected layout: {layout}")
    return path


class SegmentationDataset(Dataset):
    """Base of the dataset classes: subclasses list their file pairs and define the label mapping.

    Items are dicts ``{"image", "mask", "name"}``; without a transform ``mask`` is the remapped label map
    (``0..C-1`` and 255) of the image's size. The raw-to-train mapping is one table lookup per mask.

    Subclasses set ``num_classes``, ``class_names``, ``palette``, ``class_groups``, ``layout`` and implement
    :meth:`find_pairs` (pairing files with :meth:`match_labels`) and (when raw labels differ from train ids)
    :meth:`label_lut`.

    An image without its label, or a label file without its image, is a :class:`~contrastseg.errors.DataError`
    naming the files (the first few, and how many in all). With ``strict_pairs = False`` (what
    ``contrastseg check-data`` uses) they are listed in ``unmatched`` instead and the dataset holds the matched
    pairs. Hidden files are skipped, label names are matched regardless of letter case, and an ambiguous pairing
    is an error naming the files (see :meth:`match_labels`).
    """

    num_classes: ClassVar[int]
    ignore_index: ClassVar[int] = 255
    class_names: ClassVar[tuple[str, ...]]
    palette: ClassVar[tuple[tuple[int, int, int], ...]]
    class_groups: ClassVar[dict[str, tuple[int, ...]]] = {}
    layout: ClassVar[str] = ""
    splits: ClassVar[tuple[str, ...]] = ("train", "val")
    optional_splits: ClassVar[tuple[str, ...]] = ()  # splits a complete copy of the dataset may lack
    unannotated_splits: ClassVar[tuple[str, ...]] = ()  # splits whose official labels are all ignore
    strict_pairs: ClassVar[bool] = True
    allow_jpeg_labels: ClassVar[bool] = False  # JPEG label files are refused (see contrastseg.data.files)

    def __init__(self, root: str | Path, split: str = "train", transform: Transform | None = None) -> None:
        self.root = Path(root).expanduser()
        if split not in self.splits:
            raise DataError(f"{type(self).__name__}: unknown split {split!r}; choose from {self.splits}")
        require_dir(self.root, self.layout)
        self.split, self.transform = split, transform
        self.unmatched: list[str] = []  # filled by match_labels: one line per unpaired file
        self.pairs: list[tuple[Path, Path]] = self.find_pairs(self.root, split)
        if self.unmatched and (self.strict_pairs or not self.pairs):
            shown = "; ".join(self.unmatched[:5])
            more = f" ({len(self.unmatched)} unmatched files in all)" if len(self.unmatched) > 5 else ""
            raise DataError(f"{shown}{more}; expected layout: {self.layout}")
        if not self.pairs:
            raise DataError(f"{type(self).__name__}: no images for split {split!r} under {self.root}; "
                            f"expected layout: {self.layout}")
        self.lut = self.label_lut()

    def find_pairs(self, root: Path, split: str) -> list[tuple[Path, Path]]:  # pragma: no cover - abstract
        """``(image, label)`` paths of ``split``; raise :class:`~contrastseg.errors.DataError` naming the first
        missing path."""
        raise NotImplementedError

    def label_lut(self) -> np.ndarray | None:
        """Raw label -> train id table, or ``None`` when the files already hold train ids."""
        return None

    @classmethod
    def split_present(cls, root: Path, split: str) -> bool:
        """Whether ``root`` holds any of ``split``'s folders (an absent optional split is not an error)."""
        return True

    def match_labels(self, images: Sequence[Path], label_for: Any, labels: Iterable[Path] = ()
                     ) -> list[tuple[Path, Path]]:
        """Pair each image with ``label_for(image)``; record every unpaired or ambiguous file in ``self.unmatched``.

        Hidden files (names starting with ``.``, such as macOS's ``._<name>`` AppleDouble metadata) are skipped.
        When the expected label is missing, a file of ``labels`` whose name differs from it only in letter case
        (``a.PNG`` or ``A.png`` for ``a.png``) is its label; two such files are reported, naming both. Two images
        that would share one label (a stem with two extensions, ``a.jpg`` and ``a.png``) are reported, naming both.

        Args:
            images: the split's image files.
            label_for: image path -> the label path it must have.
            labels: the label files found in the split's label folder(s); any that no image claims is reported
                as a label without an image.
        """
        labels = [p for p in labels if not is_hidden(p)]
        by_case: dict[str, list[Path]] = defaultdict(list)
        for label in labels:
            by_case[str(label).casefold()].append(label)
        resolved: dict[Path, Path] = {}  # image -> its label (or the missing path it looked for)
        claimed: set[Path] = set()
        for image in (p for p in images if not is_hidden(p)):
            label = label_for(image)
            claimed.add(label)
            if not label.is_file():  # the name in another letter case (case-sensitive file systems)
                candidates = sorted(set(by_case.get(str(label).casefold(), ())))
                claimed.update(candidates)
                if len(candidates) > 1:
                    self.unmatched.append(f"image {image} has no label {label.name} but {len(candidates)} that differ "
                                          f"from it in letter case only: {', '.join(map(str, candidates))}; keep one")
                    continue
                label = candidates[0] if candidates else label
            resolved[image] = label
        owners: dict[Path, list[Path]] = defaultdict(list)
        for image, label in resolved.items():
            owners[label].append(image)
        pairs = []
        for image, label in resolved.items():
            if len(owners[label]) > 1:
                if image == owners[label][0]:
                    self.unmatched.append(f"images {' and '.join(map(str, owners[label]))} would share the label "
                                          f"{label} (one name, two extensions or letter cases); keep one of them")
            elif label.is_file():
                pairs.append((image, label))
            else:
                self.unmatched.append(f"image {image} has no label: missing {label}")
        self.unmatched += [f"label {label} has no image" for label in sorted(set(labels) - claimed)]
        return pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The decoded image ``(H, W, 3)`` uint8 and remapped, checked mask ``(H, W)``."""
        image_path, mask_path = self.pairs[index]
        image, mask = read_image(image_path), self.load_mask(index)
        if mask.shape != image.shape[:2]:
            raise DataError(f"label {mask_path} is {mask.shape} but image {image_path} is {image.shape[:2]}")
        return image, mask

    def load_mask(self, index: int) -> np.ndarray:
        """The remapped, checked mask ``(H, W)`` of item ``index`` alone (label statistics need no image).

        Args:
            index: item index.

        Returns:
            Train ids ``0..C-1`` and ``ignore_index``, uint8 (int32 when a class or the ignore index does not
            fit a byte).
        """
        mask_path = self.pairs[index][1]
        mask = read_mask(mask_path, allow_jpeg=self.allow_jpeg_labels)
        if self.lut is not None:
            raw, mask = mask, self.lut[mask]
            unknown = mask < 0
            if unknown.any():
                values = sorted(set(np.unique(raw[unknown]).tolist()))
                raise DataError(f"raw label value {values[0]} in {mask_path} is not a known {type(self).__name__} "
                                f"label (unknown values: {values[:10]})")
        check_mask_values(mask, self.num_classes, self.ignore_index, str(mask_path))
        return mask.astype(np.uint8 if max(self.num_classes - 1, self.ignore_index) < 256 else np.int32)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, mask = self.load(index)
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        x, y = to_tensors(image, mask)
        return {"image": x, "mask": y, "name": str(self.pairs[index][0])}
