from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from contrastseg.cli import main
from contrastseg.data import FolderDataModule, FolderDataset
from contrastseg.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[2]


def _write(root: Path, split: str, stems: list[str], *, label_value: int = 1) -> None:
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
    for stem in stems:
        cv2.imwrite(str(root / split / f"{stem}.png"), np.full((20, 30, 3), 100, np.uint8))
        mask = np.zeros((20, 30), np.uint8)
        mask[5:10, 5:10] = label_value
        cv2.imwrite(str(root / f"{split}annot" / f"{stem}.png"), mask)


def test_reads_pairs_and_applies_label_map(tmp_path: Path) -> None:
    _write(tmp_path, "train", ["a", "b"], label_value=11)
    ds = FolderDataset(tmp_path, "train", num_classes=3, label_map={11: 255})
    item = ds[0]
    assert item["image"].shape == (3, 20, 30)
    assert set(item["mask"].unique().tolist()) == {0, 255}


def test_missing_root_names_layout(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist; expected .*/train/ and .*/trainannot/"):
        FolderDataModule(root=str(tmp_path / "nowhere"), num_classes=3)


def test_missing_folder_names_first_missing_path(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match=f"missing folder {tmp_path}/trainannot; expected layout"):
        FolderDataset(tmp_path, "train", num_classes=3)


def test_missing_label_is_named(tmp_path: Path) -> None:
    _write(tmp_path, "train", ["a", "b"])
    (tmp_path / "trainannot" / "b.png").unlink()
    with pytest.raises(DataError, match="b.png"):
        FolderDataset(tmp_path, "train", num_classes=3)


def test_corrupt_image_is_named(tmp_path: Path) -> None:
    _write(tmp_path, "train", ["a"])
    (tmp_path / "train" / "a.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot decode image .*a.png"):
        FolderDataset(tmp_path, "train", num_classes=3)[0]


def test_truncated_jpeg_is_named(tmp_path: Path) -> None:
    """A JPEG cut short is an error naming the file (``cv2.imread`` would fill the missing rows with grey)."""
    _write(tmp_path, "train", ["a"])
    (tmp_path / "train" / "a.png").unlink()
    noise = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    data = cv2.imencode(".jpg", noise)[1].tobytes()
    (tmp_path / "train" / "a.jpg").write_bytes(data[: len(data) * 9 // 10])
    with pytest.raises(DataError, match="cannot decode image .*a.jpg"):
        FolderDataset(tmp_path, "train", num_classes=3)[0]


def test_labels_above_255_keep_their_value(tmp_path: Path) -> None:
    """With more than 256 classes, 16-bit labels are not cut to a byte (300 stays 300, not 44)."""
    _write(tmp_path, "train", ["a"])
    mask = np.zeros((20, 30), np.uint16)
    mask[5:10, 5:10] = 300
    cv2.imwrite(str(tmp_path / "trainannot" / "a.png"), mask)
    values = FolderDataset(tmp_path, "train", num_classes=400, ignore_index=65535)[0]["mask"].unique().tolist()
    assert values == [0, 300]


def test_label_outside_classes_names_value_and_file(tmp_path: Path) -> None:
    _write(tmp_path, "train", ["a"], label_value=7)
    with pytest.raises(DataError, match="label value 7 in .*trainannot/a.png is outside 0..2"):
        FolderDataset(tmp_path, "train", num_classes=3)[0]


def test_camvid_layout(camvid_root: Path) -> None:
    ds = FolderDataset(camvid_root, "val", num_classes=11, label_map={11: 255})
    assert len(ds) == 101
    item = ds[0]
    assert item["image"].shape == (3, 360, 480)
    values = set(item["mask"].unique().tolist())
    assert values <= set(range(11)) | {255}


def test_camvid_train_crops(camvid_root: Path) -> None:
    dm = FolderDataModule(root=str(camvid_root), num_classes=11, label_map={11: 255}, crop_size=(128, 160),
                          batch_size=2, num_workers=0)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 128, 160) and batch["mask"].shape == (2, 128, 160)


def test_label_names_match_regardless_of_letter_case(tmp_path: Path) -> None:
    """``a.PNG`` (suffix) and ``IMG.png`` (stem) are the labels of ``a.png`` and ``img.png`` on any file system."""
    _write(tmp_path, "train", ["a", "img"])
    (tmp_path / "trainannot/a.png").rename(tmp_path / "trainannot/a.PNG")
    (tmp_path / "trainannot/img.png").rename(tmp_path / "trainannot/IMG.png")
    ds = FolderDataset(tmp_path, "train", num_classes=3)
    assert [(i.name, m.name) for i, m in ds.pairs] == [("a.png", "a.PNG"), ("img.png", "IMG.png")]
    assert ds[1]["mask"].max() == 1


def test_labels_differing_only_in_case_are_ambiguous(tmp_path: Path) -> None:
    _write(tmp_path, "train", ["a"])
    (tmp_path / "trainannot/a.png").rename(tmp_path / "trainannot/A.png")
    cv2.imwrite(str(tmp_path / "trainannot/a.PNG"), np.zeros((20, 30), np.uint8))
    with pytest.raises(DataError, match=r"train/a.png has no label a.png but 2 .*letter case.*trainannot/A.png, "
                                        r".*trainannot/a.PNG"):
        FolderDataset(tmp_path, "train", num_classes=3)


def test_hidden_and_apple_double_files_are_skipped(tmp_path: Path) -> None:
    """macOS writes ``._a.png`` (metadata, not an image) beside ``a.png`` in both folders when copying to a USB disk."""
    _write(tmp_path, "train", ["a"])
    for folder in ("train", "trainannot"):
        (tmp_path / folder / "._a.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble metadata")
        (tmp_path / folder / ".DS_Store").write_bytes(b"Bud1")
        (tmp_path / folder / ".b.png").write_bytes(b"")
    ds = FolderDataset(tmp_path, "train", num_classes=3)
    assert [(i.name, m.name) for i, m in ds.pairs] == [("a.png", "a.png")]
    assert ds[0]["mask"].max() == 1


@pytest.mark.parametrize("second", ["a.jpg", "A.jpg"])
def test_one_stem_twice_in_the_image_folder_names_both(tmp_path: Path, second: str) -> None:
    """``a.png`` and ``a.jpg`` (or ``A.jpg``) would both pair with ``a.png``; neither silently shadows the other."""
    _write(tmp_path, "train", ["a", "b"])
    cv2.imwrite(str(tmp_path / "train" / second), np.zeros((20, 30, 3), np.uint8))
    with pytest.raises(DataError, match=rf"images .*train/(a.png and .*train/{second}|{second} and .*train/a.png) "
                                        r"would share the label .*trainannot/a.png"):
        FolderDataset(tmp_path, "train", num_classes=3)


def _write_wide(root: Path, stems: list[str]) -> None:
    """20x30 images with 16-bit labels: classes 255 and 299, 0 elsewhere, the top row ignored (65535)."""
    _write(root, "train", stems)
    for stem in stems:
        mask = np.zeros((20, 30), np.uint16)
        mask[:, :8], mask[:, 8:16], mask[0] = 255, 299, 65535
        cv2.imwrite(str(root / "trainannot" / f"{stem}.png"), mask)


def test_ignore_index_option_with_more_than_256_classes(tmp_path: Path) -> None:
    """300 classes with 16-bit labels: 255 is a class like any other; 65535 is ignored and pads training crops."""
    _write_wide(tmp_path, ["a", "b"])
    dm = FolderDataModule(root=str(tmp_path), num_classes=300, ignore_index=65535, crop_size=(28, 36),
                          scale_range=(1.0, 1.0), val_split="train", batch_size=2, num_workers=0)
    assert dm.ignore_index == 65535
    dm.setup("fit")
    val = dm.datasets["val"][0]["mask"]
    assert val.unique().tolist() == [0, 255, 299, 65535] and (val[0] == 65535).all()
    batch = next(iter(dm.train_dataloader()))
    mask = batch["mask"]  # (2, 28, 36): the 20x30 label padded below and (before a flip) to the right
    assert mask.shape == (2, 28, 36) and mask.unique().tolist() == [0, 255, 299, 65535]
    assert (mask[:, 20:] == 65535).all() and ((mask[:, 1:20] == 65535).sum(dim=2) == 6).all()


def test_ignore_index_must_lie_outside_the_classes(tmp_path: Path) -> None:
    """With 300 classes the default 255 would silently ignore class 255."""
    _write_wide(tmp_path, ["a"])
    with pytest.raises(ConfigError, match=r"data.init_args.ignore_index 255 is not outside the classes 0..299"):
        FolderDataModule(root=str(tmp_path), num_classes=300)
    with pytest.raises(ConfigError, match="ignore_index -1"):
        FolderDataset(tmp_path, "train", num_classes=300, ignore_index=-1)


def test_cli_links_the_folder_ignore_index_into_the_model(tmp_path: Path) -> None:
    _write_wide(tmp_path / "data", ["a", "b"])
    cli = main(["fit", "--config", str(REPO / "experiments/quickstart_contrastive.yaml"),
                "--data=contrastseg.data.FolderDataModule",
                f"--data.root={tmp_path / 'data'}", "--data.num_classes=300", "--data.ignore_index=65535",
                "--data.val_split=train", "--data.crop_size=[20, 30]", "--data.batch_size=2", "--data.num_workers=0",
                "--trainer.fast_dev_run=1", "--trainer.accelerator=cpu", f"--trainer.default_root_dir={tmp_path}"])
    assert cli.datamodule.ignore_index == 65535
    assert cli.model.ignore_index == 65535 and cli.model.num_classes == 300
    # The contrastive term samples the classes 255 and 299 of a real batch, never the ignore value.
    term = next(t for t in cli.model.losses if t.name == "contrast")
    mask = next(iter(cli.datamodule.train_dataloader()))["mask"]
    drawn = term.loss.presample(mask, strides=term.strides).pending.resolve()
    assert {255, 299} <= set(torch.cat([labels for _, labels in drawn]).tolist()) <= {0, 255, 299}
