"""``contrastseg check-data``: inspect a dataset root before a long run.

    contrastseg check-data cityscapes /data/cityscapes
    contrastseg check-data cadis /data/CaDIS --task 3 --splits train val_test

Counts images per split, decodes every image and label (with worker processes), and lists every problem found:
missing folders, images without labels and labels without images (each by name), files that do not decode, size
mismatches, label values outside the known set. A split the dataset may lack (CamVid's ``test``) is reported as
"not present (optional)" when none of its folders exist, unless ``--splits`` names it. A split whose official
labels are dummies (Cityscapes' ``test``: every pixel ignored) is decoded and checked, but not for classes that
never occur. Exits 1 when anything is wrong.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Dataset

from contrastseg.data.ade20k import ADE20KDataset
from contrastseg.data.cadis import CaDISDataset
from contrastseg.data.camvid import CamVidDataset
from contrastseg.data.cityscapes import CityscapesDataset
from contrastseg.data.dataset import SegmentationDataset
from contrastseg.data.pascal_context import PascalContextDataset
from contrastseg.errors import ContrastSegError

__all__ = ["DATASETS", "CheckReport", "check_dataset", "main"]

DATASETS: dict[str, type[SegmentationDataset]] = {
    "cityscapes": CityscapesDataset, "ade20k": ADE20KDataset, "pascal_context": PascalContextDataset,
    "cadis": CaDISDataset, "camvid": CamVidDataset,
}


@dataclass
class CheckReport:
    """What :func:`check_dataset` found: images per split, pixels per class, problems (one line each), and the
    optional splits that are not there (not a problem)."""

    images: dict[str, int] = field(default_factory=dict)
    pixels: dict[str, np.ndarray] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No problem was found."""
        return not self.problems


class _Probe(Dataset):
    """Loads one item and returns its class histogram, or the error message naming the file."""

    def __init__(self, dataset: SegmentationDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[np.ndarray | None, str | None]:
        try:
            _, mask = self.dataset.load(index)
        except ContrastSegError as err:
            return None, str(err)
        counts = np.bincount(mask[mask != self.dataset.ignore_index].ravel(), minlength=self.dataset.num_classes)
        return counts, None


def _identity(item: tuple) -> tuple:
    return item


def _lenient(cls: type[SegmentationDataset], root: str, split: str, **kwargs: Any) -> SegmentationDataset:
    """``cls(root, split)`` that lists unpaired files in ``unmatched`` instead of raising, so the rest is checked."""
    dataset = cls.__new__(cls)
    dataset.strict_pairs = False  # type: ignore[misc]  # this instance only
    dataset.__init__(root, split, **kwargs)  # type: ignore[misc]
    return dataset


def check_dataset(dataset: str, root: str, *, splits: Sequence[str] | None = None, task: int | None = None,
                  num_workers: int = 4) -> CheckReport:
    """Check every split of ``dataset`` (a :data:`DATASETS` key) under ``root``.

    Without ``splits``, every split of the dataset is checked, and an optional one (``optional_splits``) none of
    whose folders exist goes to ``report.absent`` instead of ``report.problems``.
    """
    cls = DATASETS[dataset]
    kwargs = {"task": task} if dataset == "cadis" and task is not None else {}
    report = CheckReport()
    for split in splits or [s for s in cls.splits if s != "val_test"]:
        if not splits and split in cls.optional_splits and not cls.split_present(Path(root).expanduser(), split):
            report.absent.append(split)
            continue
        try:
            ds = _lenient(cls, root, split, **kwargs)
        except ContrastSegError as err:
            report.problems.append(f"[{split}] {err}")
            continue
        report.problems += [f"[{split}] {line}" for line in ds.unmatched]
        report.images[split] = len(ds)
        loader = DataLoader(_Probe(ds), batch_size=None, num_workers=num_workers, collate_fn=_identity)
        total = np.zeros(ds.num_classes, dtype=np.int64)
        for counts, error in loader:
            if error is not None:
                report.problems.append(f"[{split}] {error}")
            else:
                total += counts
        report.pixels[split] = total
        if split in cls.unannotated_splits:  # every label is ignore (Cityscapes' test): no class can occur
            continue
        for c in np.flatnonzero(total == 0):
            report.problems.append(f"[{split}] class {ds.class_names[c]!r} ({c}) never occurs")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``contrastseg check-data DATASET ROOT [--splits ...] [--task N]``; returns the exit status (1: problems)."""
    parser = argparse.ArgumentParser(prog="contrastseg check-data", description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("root")
    parser.add_argument("--splits", nargs="*", default=None)
    parser.add_argument("--task", type=int, default=None, help="CaDIS task (1, 2 or 3)")
    parser.add_argument("--num-workers", type=int, default=4)
    args = parser.parse_args(argv)
    report = check_dataset(args.dataset, args.root, splits=args.splits, task=args.task, num_workers=args.num_workers)
    for split, n in report.images.items():
        labelled = int(report.pixels[split].sum())
        print(f"{split}: {n} images, {labelled:,} labelled pixels, "
              f"{int((report.pixels[split] > 0).sum())}/{len(report.pixels[split])} classes present")
    for split in report.absent:
        print(f"{split}: not present (optional)")
    for problem in report.problems:
        print(f"problem: {problem}")
    print("OK" if report.ok else f"{len(report.problems)} problem(s) found")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
