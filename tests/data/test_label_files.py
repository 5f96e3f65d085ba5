"""Label and image files decode to the values and the pixel grid that are stored (contrastseg.data.files)."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from contrastseg.data import FolderDataModule, FolderDataset
from contrastseg.data.dataset import read_image, read_mask
from contrastseg.errors import DataError

H, W = 12, 16


def _mask() -> np.ndarray:
    """Class 1 in the top-left block, 0 elsewhere: not symmetric under any rotation or flip."""
    mask = np.zeros((H, W), np.uint8)
    mask[:4, :5] = 1
    return mask


def _folder(root: Path, *, image_suffix: str = ".png") -> Path:
    """``root/train/a<image_suffix>`` (bright where the mask is 1) and an empty ``root/trainannot/``."""
    (root / "train").mkdir(parents=True)
    (root / "trainannot").mkdir()
    image = np.where(_mask()[..., None] == 1, 250, 10).astype(np.uint8).repeat(3, axis=2)
    Image.fromarray(image).save(root / "train" / f"a{image_suffix}", quality=100)
    return root / "trainannot"


def test_one_bit_png_keeps_class_1(tmp_path: Path) -> None:
    """``Image.fromarray(mask == 1).save`` writes a mode-"1" PNG; OpenCV alone reads it as 0/255 (255 = ignore)."""
    Image.fromarray(_mask() == 1).save(_folder(tmp_path) / "a.png")
    assert Image.open(tmp_path / "trainannot/a.png").mode == "1"
    np.testing.assert_array_equal(read_mask(tmp_path / "trainannot/a.png"), _mask())
    mask = FolderDataset(tmp_path, "train", num_classes=2)[0]["mask"]
    np.testing.assert_array_equal(mask.numpy(), _mask())


@pytest.mark.parametrize("bits", [2, 4])
def test_two_and_four_bit_grey_pngs_keep_their_values(tmp_path: Path, bits: int) -> None:
    values = (np.arange(H * W) % 3).reshape(H, W).astype(np.uint8)
    Image.fromarray(values).save(tmp_path / "m.png", bits=bits)
    assert (Image.open(tmp_path / "m.png").info.get("bits") or bits) == bits
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), values)


def test_palette_png_gives_palette_indices(tmp_path: Path) -> None:
    """VOC/ADE tools write palette PNGs: the labels are the indices (255 = VOC's boundary, ignored), not colours."""
    indices = _mask() * 2
    indices[-1, :] = 255
    label = Image.fromarray(indices, mode="P")
    label.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [224, 224, 192] * 253)
    label.save(_folder(tmp_path) / "a.png")
    assert Image.open(tmp_path / "trainannot/a.png").mode == "P"
    np.testing.assert_array_equal(read_mask(tmp_path / "trainannot/a.png"), indices)
    mask = FolderDataset(tmp_path, "train", num_classes=3)[0]["mask"].numpy()
    np.testing.assert_array_equal(mask, indices)


def test_four_bit_palette_png_gives_palette_indices(tmp_path: Path) -> None:
    label = Image.fromarray(_mask() * 3, mode="P")
    label.putpalette([0, 0, 0, 10, 10, 10, 20, 20, 20, 200, 0, 0])
    label.save(tmp_path / "m.png", bits=4)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), _mask() * 3)


def test_grey_8_and_16_bit_pngs_keep_their_values(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "g8.png"), _mask() * 200)
    cv2.imwrite(str(tmp_path / "g16.png"), _mask().astype(np.uint16) * 300)
    assert read_mask(tmp_path / "g8.png").dtype == np.uint8
    np.testing.assert_array_equal(read_mask(tmp_path / "g8.png"), _mask() * 200)
    assert read_mask(tmp_path / "g16.png").dtype == np.uint16
    np.testing.assert_array_equal(read_mask(tmp_path / "g16.png"), _mask().astype(np.uint16) * 300)


def test_tiff_and_bmp_labels_still_read(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "m.tif"), _mask().astype(np.uint16) * 300)
    cv2.imwrite(str(tmp_path / "m.bmp"), _mask() * 7)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.tif"), _mask().astype(np.uint16) * 300)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.bmp"), _mask() * 7)


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_colour_label_map_is_a_clear_error(tmp_path: Path, mode: str) -> None:
    colour = Image.fromarray(_mask() * 100).convert(mode)
    colour.save(_folder(tmp_path) / "a.png")
    with pytest.raises(DataError, match=r"label .*trainannot/a.png is a colour image .*palette"):
        FolderDataset(tmp_path, "train", num_classes=2)[0]


def test_jpeg_labels_are_refused_unless_allowed(tmp_path: Path) -> None:
    """Lossy labels invent valid class values at edges; detected from the bytes (a ``.png`` that is a JPEG too)."""
    labels = _folder(tmp_path)
    Image.fromarray(_mask()).save(labels / "a.png", format="JPEG")  # a JPEG named .png
    with pytest.raises(DataError, match=r"label .*trainannot/a.png is a JPEG file.*data.init_args.allow_jpeg_labels"):
        FolderDataset(tmp_path, "train", num_classes=2)[0]
    (labels / "a.png").rename(labels / "a.jpg")
    with pytest.raises(DataError, match=r"a.jpg is a JPEG file"):
        FolderDataset(tmp_path, "train", num_classes=2, mask_suffix=".jpg")[0]
    mask = FolderDataset(tmp_path, "train", num_classes=2, mask_suffix=".jpg", allow_jpeg_labels=True)[0]["mask"]
    assert mask.shape == (H, W) and set(mask.unique().tolist()) <= {0, 1}
    dm = FolderDataModule(root=str(tmp_path), num_classes=2, mask_suffix=".jpg", allow_jpeg_labels=True,
                          val_split="train", num_workers=0)
    dm.setup("validate")
    assert dm.datasets["val"][0]["mask"].shape == (H, W)


@pytest.mark.parametrize("orientation", [3, 6])
def test_exif_orientation_is_ignored_for_image_and_label(tmp_path: Path, orientation: int) -> None:
    """A photo tagged "rotated 180°" (3: same size) or "90°" (6) stays on its raw grid, aligned with its label."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    labels = _folder(tmp_path, image_suffix=".jpg")
    image = Image.open(tmp_path / "train/a.jpg")
    image.save(tmp_path / "train/a.jpg", exif=exif, quality=100)
    Image.fromarray(_mask()).save(labels / "a.png", exif=exif)  # PNG can carry an eXIf chunk too
    assert Image.open(tmp_path / "train/a.jpg").getexif()[0x0112] == orientation
    raw = read_image(tmp_path / "train/a.jpg")
    assert raw.shape == (H, W, 3)
    np.testing.assert_array_equal(raw[..., 0] > 128, _mask() == 1)
    np.testing.assert_array_equal(read_mask(labels / "a.png"), _mask())
    item = FolderDataset(tmp_path, "train", num_classes=2)[0]
    np.testing.assert_array_equal((item["image"][0] > 0).numpy(), item["mask"].numpy() == 1)
