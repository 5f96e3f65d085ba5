"""``contrastseg check-data`` on folder datasets (FolderDataModule) and on training configs."""

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from contrastseg.cli import main


def _pair(root: Path, split: str, stem: str, *, values: tuple[int, ...] = (0, 1, 2), suffix: str = ".png") -> Path:
    """``root/<split>/<stem>.png`` and ``root/<split>annot/<stem><suffix>`` whose rows hold ``values``."""
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / split / f"{stem}.png"), np.full((6, 8, 3), 90, np.uint8))
    mask = np.resize(np.asarray(values, np.uint16), 6)[:, None].repeat(8, axis=1)  # (6,) -> (6, 8)
    label = root / f"{split}annot" / f"{stem}{suffix}"
    cv2.imwrite(str(label), mask.astype(np.uint8 if mask.max() < 256 else np.uint16))
    return label


def _check(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(["check-data", *args, "--num-workers", "0"])
    out = capsys.readouterr()
    return exit_info.value.code, out.out + out.err


def test_folder_checks_only_the_splits_that_exist(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _pair(tmp_path, "train", "a")
    _pair(tmp_path, "val", "b")
    code, out = _check(capsys, "folder", str(tmp_path), "--num-classes", "3")
    assert code == 0, out
    assert "train: 1 images" in out and "val: 1 images" in out and "test: not present" in out
    assert "problem" not in out and out.rstrip().endswith("OK")
    code, out = _check(capsys, "folder", str(tmp_path), "--num-classes", "3", "--splits", "train", "test")
    assert code == 1 and "[test] missing folder" in out and "val:" not in out
    code, out = _check(capsys, "folder", str(tmp_path / "train"), "--num-classes", "3")
    assert code == 1 and "no split found under" in out


def test_folder_lists_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Palette and 1-bit labels are fine; JPEG labels, one stem twice, labels differing in letter case, a missing
    label and a colour label are each one problem naming the files; hidden files are skipped."""
    _pair(tmp_path, "train", "plain")
    palette = Image.fromarray(np.array([[0, 1, 2, 0, 1, 2, 0, 1]] * 6, np.uint8), mode="P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0])
    palette.save(_pair(tmp_path, "train", "palette"))
    Image.fromarray(np.eye(6, 8, dtype=bool)).save(_pair(tmp_path, "train", "onebit"))
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(_pair(tmp_path, "train", "jpeg"), format="JPEG")
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(_pair(tmp_path, "train", "colour"))
    _pair(tmp_path, "train", "twice")
    cv2.imwrite(str(tmp_path / "train/twice.jpg"), np.zeros((6, 8, 3), np.uint8))
    _pair(tmp_path, "train", "case").rename(tmp_path / "trainannot/CASE.png")
    cv2.imwrite(str(tmp_path / "trainannot/case.PNG"), np.zeros((6, 8), np.uint8))
    _pair(tmp_path, "train", "unlabelled").unlink()
    for folder in ("train", "trainannot"):
        (tmp_path / folder / "._plain.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    code, out = _check(capsys, "folder", str(tmp_path), "--num-classes", "3")
    problems = [line for line in out.splitlines() if line.startswith("problem: ")]
    assert code == 1 and out.rstrip().endswith(f"{len(problems)} problem(s) found")
    assert "train: 5 images" in out  # plain, palette, onebit, jpeg and colour; the others are not pairs
    expected = [r"train/twice.jpg and .*train/twice.png would share the label .*trainannot/twice.png",
                r"train/case.png has no label case.png but 2 .*trainannot/CASE.png, .*trainannot/case.PNG",
                r"train/unlabelled.png has no label: missing .*trainannot/unlabelled.png",
                r"trainannot/jpeg.png is a JPEG file.*allow_jpeg_labels",
                r"trainannot/colour.png is a colour image .*palette"]
    for pattern in expected:
        assert sum(bool(re.search(pattern, p)) for p in problems) == 1, (pattern, problems)
    assert len(problems) == len(expected), problems
    assert "._plain" not in out and "palette.png" not in out and "onebit.png" not in out


def test_folder_options(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Folder patterns, label suffix, label map, ignore index and JPEG labels as FolderDataModule takes them."""
    for stem in ("a", "b"):
        _pair(tmp_path, "images/train", stem, values=(0, 1, 7, 65535), suffix="_gt.png")
    (tmp_path / "images/trainannot").rename(tmp_path / "labels")
    base = ["folder", str(tmp_path), "--num-classes", "3", "--image-dir", "images/{split}", "--mask-dir", "labels",
            "--mask-suffix", "_gt.png", "--splits", "train"]
    code, out = _check(capsys, *base, "--label-map", "{7: 2}", "--ignore-index", "65535")
    assert code == 0 and "train: 2 images" in out and "3/3 classes present" in out, out
    code, out = _check(capsys, *base, "--label-map", "{7: 2}")
    assert code == 1 and "label value 65535 in" in out and "b_gt.png" in out
    code, out = _check(capsys, *base, "--ignore-index", "2")
    assert code == 2 and "--ignore-index 2 is not outside the classes 0..2" in out
    jpeg = tmp_path / "j"  # 16x16, classes in whole 8x8 blocks: decoded exactly at quality 100
    _pair(jpeg, "train", "a")
    cv2.imwrite(str(jpeg / "train/a.png"), np.zeros((16, 16, 3), np.uint8))
    Image.fromarray(np.repeat(np.array([0, 1], np.uint8), 8)[:, None].repeat(16, axis=1)).save(
        jpeg / "trainannot/a.png", format="JPEG", quality=100)
    code, out = _check(capsys, "folder", str(jpeg), "--num-classes", "2")
    assert code == 1 and "is a JPEG file" in out
    code, out = _check(capsys, "folder", str(jpeg), "--num-classes", "2", "--allow-jpeg-labels")
    assert code == 0, out


def test_config_data_section(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``--config`` checks what the run reads: a FolderDataModule on its train/val splits, a dataset module as such."""
    _pair(tmp_path / "data", "train", "a")
    (tmp_path / "base.yaml").write_text("data:\n  class_path: contrastseg.data.FolderDataModule\n  init_args:\n"
                                        f"    root: {tmp_path / 'data'}\n    num_classes: 3\n")
    (tmp_path / "run.yaml").write_text("extends: base.yaml\ndata:\n  init_args:\n    val_split: train\n")
    code, out = _check(capsys, "--config", str(tmp_path / "run.yaml"))
    assert code == 0 and "train: 1 images" in out and "val" not in out, out
    code, out = _check(capsys, "--config", str(tmp_path / "base.yaml"))
    assert code == 1 and "[val] missing folder" in out  # the run would read val
    (tmp_path / "camvid.yaml").write_text("data:\n  class_path: contrastseg.data.CamVidDataModule\n  init_args:\n"
                                          f"    root: {tmp_path / 'data'}\n")
    code, out = _check(capsys, "--config", str(tmp_path / "camvid.yaml"))
    assert code == 1 and "[val] missing folder" in out and "test: not present" in out
    (tmp_path / "synthetic.yaml").write_text("data:\n  class_path: contrastseg.data.SyntheticDataModule\n")
    code, out = _check(capsys, "--config", str(tmp_path / "synthetic.yaml"))
    assert code == 2 and "not a dataset on disk" in out


def test_folder_real_camvid(camvid_root: Path, capsys: pytest.CaptureFixture) -> None:
    code, out = _check(capsys, "folder", str(camvid_root), "--num-classes", "11", "--label-map", "{11: 255}")
    assert code == 0, out
    assert "train: 367 images" in out and "val: 101 images" in out and "test: not present" in out
