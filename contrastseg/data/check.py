"""``contrastseg check-data``: inspect a dataset root before a long run.

    contrastseg check-data cityscapes /data/cityscapes
    contrastseg check-data cadis /data/CaDIS --task 3 --splits train val_test
    contrastseg check-data folder /data/mine --num-classes 5 --mask-dir '{split}_labels' --ignore-index 65535
    contrastseg check-data --config my_data.yaml

Counts images per split, decodes every image and label (with worker processes), and lists every problem found:
missing folders, images without labels and labels without images (each by name), ambiguous pairs (one stem with
two extensions, two labels differing in letter case), files that do not decode, colour or JPEG label files, size
mismatches, label values outside the known set. A split the dataset may lack (CamVid's ``test``) is reported as
"not present (optional)" when none of its folders exist, unless ``--splits`` names it; for a folder dataset every
split is such a split (``train``, ``val`` and ``test`` are looked for). ``--config`` checks the data section of a
training config: a ``FolderDataModule`` on the splits the run reads, a dataset data module as its dataset. A split
whose official labels are dummies (Cityscapes' ``test``: every pixel ignored) is decoded and checked, but not for
classes that never occur. Exits 1 when anything is wrong.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from torch.utils.data import DataLoader, Dataset

from contrastseg.data.ade20k import ADE20KDataset
from contrastseg.data.cadis import CaDISDataset
from contrastseg.data.camvid import CamVidDataset
from contrastseg.data.cityscapes import CityscapesDataset
from contrastseg.data.datamodules import DatasetDataModule
from contrastseg.data.dataset import SegmentationDataset
from contrastseg.data.folder import FolderDataModule, FolderDataset, check_ignore_index
from contrastseg.data.pascal_context import PascalContextDataset
from contrastseg.errors import ConfigError, ContrastSegError

__all__ = ["DATASETS", "CheckReport", "check_config", "check_dataset", "check_folder", "main"]

DATASETS: dict[str, type[SegmentationDataset]] = {
    "cityscapes": CityscapesDataset, "ade20k": ADE20KDataset, "pascal_context": PascalContextDataset,
    "cadis": CaDISDataset, "camvid": CamVidDataset,
}
_FOLDER_OPTIONS = ("image_dir", "mask_dir", "mask_suffix", "label_map", "ignore_index", "allow_jpeg_labels",
                   "class_names")


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


def _check_split(report: CheckReport, split: str, make: Callable[[str], SegmentationDataset], *, num_workers: int,
                 annotated: bool = True) -> None:
    """Decode every item of one split into ``report``; every problem is one line prefixed with ``[split]``."""
    try:
        ds = make(split)
    except ContrastSegError as err:
        report.problems.append(f"[{split}] {err}")
        return
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
    if annotated:  # a split whose labels are all ignore (Cityscapes' test) has no class to find
        missing = np.flatnonzero(total == 0)
        report.problems += [f"[{split}] class {ds.class_names[c]!r} ({c}) never occurs" for c in missing]


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
        _check_split(report, split, lambda s: _lenient(cls, root, s, **kwargs), num_workers=num_workers,
                     annotated=split not in cls.unannotated_splits)
    return report


def check_folder(root: str, *, num_classes: int, splits: Sequence[str] | None = None, num_workers: int = 4,
                 image_dir: str = "{split}", mask_dir: str = "{split}annot", **options: Any) -> CheckReport:
    """Check a :class:`~contrastseg.data.FolderDataModule` dataset: the options are those of :class:`FolderDataset`.

    Without ``splits``, the splits ``train``, ``val`` and ``test`` whose image or label folder exists are checked
    (the others go to ``report.absent``); splits whose folder patterns lack ``{split}`` are one split, checked once.

    Raises:
        ConfigError: ``ignore_index`` is one of the classes.
    """
    check_ignore_index(options.get("ignore_index", 255), num_classes)
    base = Path(root).expanduser()
    report, folders = CheckReport(), set()
    for split in splits or ("train", "val", "test"):
        where = (image_dir.format(split=split), mask_dir.format(split=split))
        if not splits and (where in folders or not any((base / f).exists() for f in where)):
            report.absent += [] if where in folders else [split]
            continue
        folders.add(where)
        _check_split(report, split, lambda s: _lenient(FolderDataset, root, s, num_classes=num_classes,
                                                       image_dir=image_dir, mask_dir=mask_dir, **options),
                     num_workers=num_workers)
    if not report.images and not report.problems:
        report.problems.append(f"no split found under {root}: no folder {image_dir} or {mask_dir} for split "
                               f"{' or '.join(report.absent)}; set the folder patterns or the split names")
    return report


def _data_class(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module or "contrastseg.data"), name)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"data.class_path {class_path!r} cannot be imported ({err})") from err
    if not isinstance(cls, type):
        raise ConfigError(f"data.class_path {class_path!r} is not a class")
    return cls


def check_config(configs: Sequence[str], *, splits: Sequence[str] | None = None, num_workers: int = 4) -> CheckReport:
    """Check the dataset of a training config's ``data`` section (several files merged in order, ``extends`` too).

    A :class:`FolderDataModule` is checked on the splits the run reads (``train_split``, ``val_split``, and
    ``test_split`` when set), a dataset data module (``CityscapesDataModule`` ...) as ``check-data <dataset> ROOT``.

    Raises:
        ConfigError: the data section names no dataset on disk, or lacks ``root`` or ``num_classes``.
    """
    from contrastseg.cli_config import read_config

    data = read_config(configs).get("data")
    if not isinstance(data, dict) or not data.get("class_path"):
        raise ConfigError(f"{', '.join(configs)}: no data.class_path to check")
    cls = _data_class(str(data["class_path"]))
    init = {k: v for k, v in data.items() if k not in ("class_path", "init_args")} | dict(data.get("init_args") or {})
    if not issubclass(cls, (FolderDataModule, DatasetDataModule)):
        raise ConfigError(f"data.class_path {data['class_path']} is not a dataset on disk; check-data checks "
                          "FolderDataModule and the dataset data modules (CityscapesDataModule, ...)")
    if init.get("root") is None:
        raise ConfigError(f"{', '.join(configs)}: data.init_args.root is not set")
    root = str(init["root"])
    if issubclass(cls, FolderDataModule):
        if init.get("num_classes") is None:
            raise ConfigError(f"{', '.join(configs)}: data.init_args.num_classes is not set")
        run_splits = [init.get("train_split", "train"), init.get("val_split", "val"), init.get("test_split")]
        return check_folder(root, num_classes=int(init["num_classes"]), num_workers=num_workers,
                            splits=splits or [s for s in dict.fromkeys(run_splits) if s is not None],
                            **{k: init[k] for k in _FOLDER_OPTIONS if init.get(k) is not None})
    key = next(k for k, dataset in DATASETS.items() if dataset is cls.dataset_class)
    task = int(init.get("task", 2)) if key == "cadis" else None
    return check_dataset(key, root, splits=splits, task=task, num_workers=num_workers)


def _print(report: CheckReport) -> int:
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


def main(argv: Sequence[str] | None = None) -> int:
    """``contrastseg check-data DATASET ROOT ...``, ``folder ROOT --num-classes N ...`` or ``--config FILE``.

    Returns the exit status: 0 when nothing is wrong, 1 when a problem was found, 2 for a wrong command line.
    """
    parser = argparse.ArgumentParser(prog="contrastseg check-data", description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", choices=[*sorted(DATASETS), "folder"])
    parser.add_argument("root", nargs="?")
    parser.add_argument("--config", "-c", action="append", default=None,
                        help="check the data section of a training config (repeatable, merged in order)")
    parser.add_argument("--splits", nargs="*", default=None)
    parser.add_argument("--task", type=int, default=None, help="CaDIS task (1, 2 or 3)")
    parser.add_argument("--num-workers", type=int, default=4)
    folder = parser.add_argument_group("folder datasets (FolderDataModule)")
    folder.add_argument("--num-classes", type=int, default=None)
    folder.add_argument("--image-dir", default="{split}")
    folder.add_argument("--mask-dir", default="{split}annot")
    folder.add_argument("--mask-suffix", default=".png")
    folder.add_argument("--label-map", default=None, help="YAML mapping raw -> training id, e.g. '{11: 255}'")
    folder.add_argument("--ignore-index", type=int, default=255)
    folder.add_argument("--allow-jpeg-labels", action="store_true")
    args = parser.parse_args(argv)
    if bool(args.config) == bool(args.dataset and args.root):
        parser.error("give DATASET ROOT (or folder ROOT --num-classes N), or --config FILE, not both")
    try:
        if args.config:
            report = check_config(args.config, splits=args.splits, num_workers=args.num_workers)
        elif args.dataset == "folder":
            if args.num_classes is None:
                parser.error("folder datasets need --num-classes")
            label_map = yaml.safe_load(args.label_map) if args.label_map else None
            if label_map is not None and not isinstance(label_map, dict):
                parser.error(f"--label-map {args.label_map!r} is not a YAML mapping such as '{{11: 255}}'")
            report = check_folder(
                args.root, num_classes=args.num_classes, splits=args.splits, num_workers=args.num_workers,
                image_dir=args.image_dir, mask_dir=args.mask_dir, mask_suffix=args.mask_suffix, label_map=label_map,
                ignore_index=args.ignore_index, allow_jpeg_labels=args.allow_jpeg_labels)
        else:
            report = check_dataset(args.dataset, args.root, splits=args.splits, task=args.task,
                                   num_workers=args.num_workers)
    except (ContrastSegError, yaml.YAMLError) as err:
        message = str(err).replace("data.init_args.ignore_index", "--ignore-index") if not args.config else str(err)
        print(f"contrastseg: error: {' '.join(message.split())}", file=sys.stderr)
        return 2
    return _print(report)


if __name__ == "__main__":
    sys.exit(main())
