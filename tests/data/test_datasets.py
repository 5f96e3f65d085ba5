"""Dataset classes on tiny fake copies of the official layouts (and real CamVid)."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from contrastseg.data import (
    ADE20KDataset,
    CaDISDataModule,
    CaDISDataset,
    CamVidDataset,
    CityscapesDataModule,
    CityscapesDataset,
    PascalContextDataset,
)
from contrastseg.data.check import check_dataset
from contrastseg.data.check import main as check_data_main
from contrastseg.errors import DataError


def _pair(image: Path, label: Path, values: list[int]) -> None:
    """An image and a label whose column ``i`` holds ``values[i]`` (at least 12 columns)."""
    width = max(12, len(values))
    image.parent.mkdir(parents=True, exist_ok=True)
    label.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(image), np.full((8, width, 3), 90, np.uint8))
    mask = np.zeros((8, width), np.uint8)
    mask[:, : len(values)] = values
    cv2.imwrite(str(label), mask)


def _cityscapes(root: Path, values: list[int]) -> None:
    for city, stem in (("aachen", "aachen_000000_000019"), ("bonn", "bonn_000001_000019")):
        _pair(root / "leftImg8bit" / "train" / city / f"{stem}_leftImg8bit.png",
              root / "gtFine" / "train" / city / f"{stem}_gtFine_labelIds.png", values)


CITYSCAPES_TRAIN_ID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                       26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}  # the official table, typed out again


def test_cityscapes_every_label_id(tmp_path: Path) -> None:
    _cityscapes(tmp_path, list(range(34)))
    ds = CityscapesDataset(tmp_path, "train")
    assert len(ds) == 2 and ds.num_classes == 19 and len(ds.class_names) == 19 == len(ds.palette)
    assert ds[1]["mask"][0, :34].tolist() == [CITYSCAPES_TRAIN_ID.get(i, 255) for i in range(34)]
    assert ds.class_groups["vehicle"] == (13, 14, 15, 16, 17, 18)
    assert [p[0].parent.name for p in ds.pairs] == ["aachen", "bonn"]


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
    _pair(root / "images/validation/ADE_val_1.jpg", root / "annotations/validation/ADE_val_1.png",
          list(range(151)))
    ds = ADE20KDataset(tmp_path, "val")  # the parent folder works too
    assert ds.num_classes == 150 == len(ds.class_names) == len(set(ds.class_names))
    assert ds[0]["mask"][0, :151].tolist() == [255] + list(range(150))


def test_pascal_context_split_lists(tmp_path: Path) -> None:
    root = tmp_path / "VOCdevkit" / "VOC2010"
    _pair(root / "JPEGImages/2008_000002.jpg", root / "SegmentationClassContext/2008_000002.png", list(range(60)))
    (root / "ImageSets/SegmentationContext").mkdir(parents=True)
    (root / "ImageSets/SegmentationContext/train.txt").write_text("2008_000002\n")
    (root / "ImageSets/SegmentationContext/val.txt").write_text("2008_000003\n")
    ds = PascalContextDataset(tmp_path, "train")
    assert ds.num_classes == 59 == len(ds.class_names) == len(set(ds.class_names))
    assert ds[0]["mask"][0, :60].tolist() == [255] + list(range(59))
    with pytest.raises(DataError, match="lists 2008_000003 but .*2008_000003.jpg is missing"):
        PascalContextDataset(tmp_path, "val")


def _cadis(root: Path, values: list[int]) -> None:
    for video in range(1, 26):
        _pair(root / f"Video{video:02d}/Images/Video{video}_frame000.png",
              root / f"Video{video:02d}/Labels/Video{video}_frame000.png", values)


def _task_reference(task: int, raw: int) -> int:
    """The FACTS mapping, written out by hand."""
    if task == 1:
        return raw if raw < 7 else 7
    if task == 3:
        return raw if raw < 25 else 255
    groups = {7: (7, 8, 10, 20, 27, 32), 8: (9, 22), 9: (11, 33), 10: (12, 28), 11: (13, 21), 12: (14, 24),
              13: (15, 18), 14: (16, 23), 15: (17,), 16: (19,)}
    if raw < 7:
        return raw
    return next((k for k, v in groups.items() if raw in v), 255)


@pytest.mark.parametrize("task,classes", [(1, 8), (2, 17), (3, 25)])
def test_cadis_tasks_every_raw_class(tmp_path: Path, task: int, classes: int) -> None:
    _cadis(tmp_path, list(range(36)))
    ds = CaDISDataset(tmp_path, "train", task=task)
    assert ds.num_classes == classes == len(ds.class_names) and len(ds) == 19
    assert ds[0]["mask"][0, :36].tolist() == [_task_reference(task, r) for r in range(36)]
    assert ds.class_groups["anatomies"] == (0, 4, 5, 6) and ds.class_groups["instruments"][0] == 7
    assert sorted(set(ds.video_of)) == [1, 3, 4, 6, 8, 9, 10, 11, 13, 14, 15, 17, 18, 19, 20, 21, 23, 24, 25]
    assert sorted(set(CaDISDataset(tmp_path, "val_test", task=task).video_of)) == [2, 5, 7, 12, 16, 22]
    assert sorted(set(CaDISDataset(tmp_path, "test", task=task).video_of)) == [2, 12, 22]


@pytest.mark.parametrize("raw", [36, 300])
def test_cadis_unknown_raw_value_is_named(tmp_path: Path, raw: int) -> None:
    """A raw value beyond the 36 classes, also one a byte cannot hold (16-bit PNG), names the value and file."""
    _cadis(tmp_path, [0])
    label = next(tmp_path.glob("Video01/Labels/*.png"))
    cv2.imwrite(str(label), np.full((8, 12), raw, np.uint16))
    with pytest.raises(DataError, match=f"raw label value {raw} in .*Video01.*is not a known"):
        CaDISDataset(tmp_path, "train", task=3)[0]


def test_cadis_datamodule_facts_follow_task(tmp_path: Path) -> None:
    _cadis(tmp_path, [0])
    dm = CaDISDataModule(root=str(tmp_path), task=3, num_workers=0)
    assert dm.num_classes == 25 and dm.class_names[24] == "Lens Injector Handle"
    assert dm.repeat_factor_threshold == 0.15 and dm.splits["val"] == "val_test"


RARE_BY_HAND = {2: (9, 10, 12, 14, 16), 3: (11, 12, 14, 16, 18, 19, 20, 21, 22, 23, 24)}  # FACTS, typed out again


@pytest.mark.parametrize("task", [1, 2, 3])
def test_cadis_datamodule_groups_include_rare(tmp_path: Path, task: int) -> None:
    # The module links the data module's groups into the metrics: without "rare", val/mIoU_rare is never logged.
    _cadis(tmp_path, [0])
    dm = CaDISDataModule(root=str(tmp_path), task=task, num_workers=0)
    assert dm.class_groups == CaDISDataset(tmp_path, "train", task=task).class_groups
    assert dm.class_groups.get("rare") == RARE_BY_HAND.get(task)
    assert set(dm.class_groups) == {"anatomies", "others", "instruments"} | ({"rare"} if task > 1 else set())


def test_camvid_real(camvid_root: Path) -> None:
    train, val = CamVidDataset(camvid_root, "train"), CamVidDataset(camvid_root, "val")
    assert (len(train), len(val)) == (367, 101) and train.num_classes == 11
    for ds in (train, val):
        for i in (0, len(ds) - 1):
            image, mask = ds.load(i)
            assert image.shape == (360, 480, 3) and mask.shape == (360, 480)
        seen = set()
        for index, (_, label_path) in enumerate(ds.pairs):  # every label file of the split, remapped as training reads it
            mask = ds.load_mask(index)
            assert mask.shape == (360, 480), label_path
            seen |= set(np.unique(mask).tolist())
        assert seen <= set(range(11)) | {255} and set(range(11)) <= seen, seen
    assert train.class_groups["rare"] == (2, 6, 7, 9, 10)


def _camvid(root: Path, stems: dict[str, list[str]]) -> None:
    for split, names in stems.items():
        for stem in names:
            _pair(root / split / f"{stem}.png", root / f"{split}annot" / f"{stem}.png", list(range(12)))


def test_unmatched_files_are_named_both_ways(tmp_path: Path) -> None:
    _camvid(tmp_path, {"train": ["a", "b", "c"]})
    (tmp_path / "trainannot/b.png").unlink()  # an image without its label
    (tmp_path / "train/c.png").unlink()  # a label without its image
    with pytest.raises(DataError, match=r"image .*train/b.png has no label: missing .*trainannot/b.png; "
                                        r"label .*trainannot/c.png has no image; expected layout"):
        CamVidDataset(tmp_path, "train")


def test_label_without_image_cityscapes_cadis_ade20k(tmp_path: Path) -> None:
    _cityscapes(tmp_path / "cs", [7])
    (tmp_path / "cs/leftImg8bit/train/bonn/bonn_000001_000019_leftImg8bit.png").unlink()
    (tmp_path / "cs/gtFine/train/bonn/bonn_000001_000019_gtFine_color.png").write_bytes(b"")  # not a label file
    with pytest.raises(DataError, match="label .*bonn_000001_000019_gtFine_labelIds.png has no image") as err:
        CityscapesDataset(tmp_path / "cs", "train")
    assert "gtFine_color" not in str(err.value)
    _cadis(tmp_path / "cadis", [0])
    (tmp_path / "cadis/Video05/Images/Video5_frame000.png").unlink()
    (tmp_path / "cadis/Video05/Images/Video5_frame001.png").write_bytes(b"")  # and an image without its label
    with pytest.raises(DataError, match=r"Video5_frame001.png has no label.*Labels/Video5_frame000.png has no image"):
        CaDISDataset(tmp_path / "cadis", "val")
    CaDISDataset(tmp_path / "cadis", "train")  # other videos are fine
    root = tmp_path / "ade" / "ADEChallengeData2016"
    _pair(root / "images/training/ADE_train_1.jpg", root / "annotations/training/ADE_train_1.png", [1])
    _pair(root / "images/training/ADE_train_2.jpg", root / "annotations/training/ADE_train_2.png", [1])
    (root / "images/training/ADE_train_2.jpg").unlink()
    with pytest.raises(DataError, match="label .*annotations/training/ADE_train_2.png has no image"):
        ADE20KDataset(tmp_path / "ade", "train")


def test_check_data_lists_unmatched_files_and_checks_the_rest(tmp_path: Path) -> None:
    _camvid(tmp_path, {"train": ["a", "b", "c", "d"], "val": ["e"]})
    (tmp_path / "trainannot/b.png").unlink()
    (tmp_path / "train/c.png").unlink()
    report = check_dataset("camvid", str(tmp_path), num_workers=0)
    assert report.images == {"train": 2, "val": 1}, "the matched pairs are still checked"
    assert any("train/b.png has no label" in p and p.startswith("[train]") for p in report.problems)
    assert any("trainannot/c.png has no image" in p for p in report.problems)
    assert report.absent == ["test"] and not report.ok


def test_check_data_optional_split_absent_is_not_a_problem(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _camvid(tmp_path, {"train": ["a"], "val": ["b"]})
    assert check_data_main(["camvid", str(tmp_path), "--num-workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "test: not present (optional)" in out and "problem" not in out and out.rstrip().endswith("OK")
    # Asked for by name, or half there (images without the label folder), it is a problem.
    assert check_data_main(["camvid", str(tmp_path), "--splits", "test", "--num-workers", "0"]) == 1
    assert "missing folder" in capsys.readouterr().out
    (tmp_path / "test").mkdir()
    report = check_dataset("camvid", str(tmp_path), num_workers=0)
    assert report.absent == [] and any("[test] missing folder" in p and "testannot" in p for p in report.problems)


def test_check_data_real_camvid_exits_0(camvid_root: Path, capsys: pytest.CaptureFixture) -> None:
    assert check_data_main(["camvid", str(camvid_root), "--num-workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "train: 367 images" in out and "val: 101 images" in out and "test: not present (optional)" in out


def test_check_data_accepts_cityscapes_dummy_test_labels(tmp_path: Path) -> None:
    """The official gtFine/test labels ignore every pixel: no "class never occurs" for that split alone."""
    for split in ("train", "val", "test"):
        values = [0] if split == "test" else list(CITYSCAPES_TRAIN_ID)  # labelId 0 (unlabeled) -> 255
        _pair(tmp_path / "leftImg8bit" / split / "bonn" / "bonn_000001_000019_leftImg8bit.png",
              tmp_path / "gtFine" / split / "bonn" / "bonn_000001_000019_gtFine_labelIds.png", values)
    report = check_dataset("cityscapes", str(tmp_path), num_workers=0)
    assert report.ok, report.problems
    assert report.images == {"train": 1, "val": 1, "test": 1} and report.pixels["test"].sum() == 0
    _pair(tmp_path / "leftImg8bit" / "val" / "bonn" / "bonn_000001_000019_leftImg8bit.png",
          tmp_path / "gtFine" / "val" / "bonn" / "bonn_000001_000019_gtFine_labelIds.png", [0])
    assert len(check_dataset("cityscapes", str(tmp_path), num_workers=0).problems) == 19  # val is annotated


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
