"""Dataset classes on tiny fake copies of the official layouts (and real CamVid)."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from contrastseg.data import (
    ADE20KDataset, CaDISDataModule, CaDISDataset, CamVidDataset, CityscapesDataModule, CityscapesDataset,
    PascalContextDataset,
)
from contrastseg.data.check import check_dataset
from contrastseg.errors import DataError


def _pair(image: Path, label: Path, values: list[int], ext_ok: bool = True) -> None:
    image.parent.mkdir(parents=True, exist_ok=True)
    label.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(image), np.full((8, 12, 3), 90, np.uint8))
    mask = np.zeros((8, 12), np.uint8)
    for i, v in enumerate(values):
        mask[:, i] = v
    cv2.imwrite(str(label), mask)


def _cityscapes(root: Path, values: list[int]) -> None:
    for city, stem in (("aachen", "aachen_000000_000019"), ("bonn", "bonn_000001_000019")):
        _pair(root / "leftImg8bit" / "train" / city / f"{stem}_leftImg8bit.png",
              root / "gtFine" / "train" / city / f"{stem}_gtFine_labelIds.png", values)


def test_cityscapes_label_ids_to_train_ids(tmp_path: Path) -> None:
    _cityscapes(tmp_path, [7, 26, 0, 33, 1, 24])
    ds = CityscapesDataset(tmp_path, "train")
    assert len(ds) == 2 and ds.num_classes == 19 and len(ds.class_names) == 19 == len(ds.palette)
    mask = ds[0]["mask"]
    assert mask[0, :6].tolist() == [0, 13, 255, 18, 255, 11]
    assert ds.class_groups["vehicle"] == (13, 14, 15, 16, 17, 18)


def test_cityscapes_unknown_label_id_names_value_and_file(tmp_path: Path) -> None:
    _cityscapes(tmp_path, [7, 40])
    with pytest.raises(DataError, match="raw label value 40 in .*gtFine_labelIds.png is not a known"):
        CityscapesDataset(tmp_path, "train")[0]


def test_cityscapes_missing_label_and_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="missing folder .*leftImg8bit/train; expected layout: ROOT/leftImg8bit"):
        CityscapesDataset(tmp_path, "train")
    _cityscapes(tmp_path, [7])
    (tmp_path / "gtFine/train/bonn/bonn_000001_000019_gtFine_labelIds.png").unlink()
    with pytest.raises(DataError, match="has no label: missing .*bonn_000001_000019_gtFine_labelIds.png"):
        CityscapesDataset(tmp_path, "train")
    with pytest.raises(DataError, match="does not exist; expected layout"):
        CityscapesDataModule(root=str(tmp_path / "nope"))


def test_ade20k_shift_and_ignore(tmp_path: Path) -> None:
    root = tmp_path / "ADEChallengeData2016"
    _pair(root / "images/validation/ADE_val_1.jpg", root / "annotations/validation/ADE_val_1.png", [0, 1, 150])
    ds = ADE20KDataset(tmp_path, "val")  # the parent folder works too
    assert ds.num_classes == 150 == len(ds.class_names)
    assert ds[0]["mask"][0, :3].tolist() == [255, 0, 149]


def test_pascal_context_split_lists(tmp_path: Path) -> None:
    root = tmp_path / "VOCdevkit" / "VOC2010"
    _pair(root / "JPEGImages/2008_000002.jpg", root / "SegmentationClassContext/2008_000002.png", [0, 1, 59])
    (root / "ImageSets/SegmentationContext").mkdir(parents=True)
    (root / "ImageSets/SegmentationContext/train.txt").write_text("2008_000002\n")
    (root / "ImageSets/SegmentationContext/val.txt").write_text("2008_000003\n")
    ds = PascalContextDataset(tmp_path, "train")
    assert ds.num_classes == 59 == len(ds.class_names)
    assert ds[0]["mask"][0, :3].tolist() == [255, 0, 58]
    with pytest.raises(DataError, match="lists 2008_000003 but .*2008_000003.jpg is missing"):
        PascalContextDataset(tmp_path, "val")


def _cadis(root: Path, values: list[int]) -> None:
    for video in range(1, 26):
        _pair(root / f"Video{video:02d}/Images/Video{video}_frame000.png",
              root / f"Video{video:02d}/Labels/Video{video}_frame000.png", values)


@pytest.mark.parametrize("task,expected,classes", [
    (1, [0, 6, 7, 7, 7], 8),
    (2, [0, 6, 7, 8, 255, 255, 15, 16, 9, 11], 17),
    (3, [0, 6, 7, 22, 255, 255, 17, 19, 11, 21], 25),
])
def test_cadis_tasks(tmp_path: Path, task: int, expected: list[int], classes: int) -> None:
    raw = [0, 6, 7, 22, 25, 35, 17, 19, 11, 21]
    _cadis(tmp_path, raw)
    ds = CaDISDataset(tmp_path, "train", task=task)
    assert ds.num_classes == classes == len(ds.class_names) and len(ds) == 19
    assert ds[0]["mask"][0, : len(expected)].tolist() == expected
    assert ds.class_groups["anatomies"] == (0, 4, 5, 6) and ds.class_groups["instruments"][0] == 7
    assert len(CaDISDataset(tmp_path, "val_test", task=task)) == 6


def test_cadis_datamodule_facts_follow_task(tmp_path: Path) -> None:
    _cadis(tmp_path, [0])
    dm = CaDISDataModule(root=str(tmp_path), task=3, num_workers=0)
    assert dm.num_classes == 25 and dm.class_names[24] == "Lens Injector Handle"
    assert dm.repeat_factor_threshold == 0.15 and dm.splits["val"] == "val_test"


def test_camvid_real(camvid_root: Path) -> None:
    ds = CamVidDataset(camvid_root, "train")
    assert len(ds) == 367 and ds.num_classes == 11
    assert set(np.unique(ds.load(0)[1]).tolist()) <= set(range(11)) | {255}
    assert ds.class_groups["rare"] == (2, 6, 7, 9, 10)


def test_check_data_reports_every_problem(tmp_path: Path) -> None:
    _cityscapes(tmp_path, [7, 26])
    bad = tmp_path / "leftImg8bit/train/bonn/bonn_000001_000019_leftImg8bit.png"
    bad.write_bytes(b"garbage")
    report = check_dataset("cityscapes", str(tmp_path), splits=["train", "val"], num_workers=0)
    assert report.images == {"train": 2}
    text = "\n".join(report.problems)
    assert "cannot decode image" in text and "bonn_000001_000019_leftImg8bit.png" in text
    assert "missing folder" in text and "[val]" in text
    assert "class 'sidewalk' (1) never occurs" in text
    assert not report.ok
