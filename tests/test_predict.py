from pathlib import Path

import cv2
import numpy as np
import pytest

from contrastseg.cli import main
from contrastseg.data import SYNTHETIC_CLASSES
from contrastseg.data.synthetic import SYNTHETIC_PALETTE, render_scene

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("run")
    main(["fit", "--config", str(REPO / "experiments/quickstart.yaml"), "--trainer.max_epochs=1",
          "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1", "--data.init_args.num_workers=0",
          f"--trainer.logger.init_args.save_dir={root}"])
    return next(root.rglob("last.ckpt"))


def test_predict_folder_writes_colour_masks_and_overlays(checkpoint: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for i, size in enumerate([(96, 128), (70, 90)]):  # any size
        image, _ = render_scene(np.random.default_rng(i), *size)
        cv2.imwrite(str(images / f"scene{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    with pytest.raises(SystemExit) as exit_info:
        main(["predict-folder", str(checkpoint), str(images), str(tmp_path / "out"), "--overlay"])
    assert exit_info.value.code == 0
    labels = cv2.imread(str(tmp_path / "out/scene1_labels.png"), cv2.IMREAD_UNCHANGED)
    colour = cv2.cvtColor(cv2.imread(str(tmp_path / "out/scene1_color.png")), cv2.COLOR_BGR2RGB)
    assert labels.shape == (70, 90) and labels.max() < len(SYNTHETIC_CLASSES)
    np.testing.assert_array_equal(colour, np.asarray(SYNTHETIC_PALETTE, np.uint8)[labels])  # the dataset's palette
    assert (tmp_path / "out/scene0_overlay.jpg").is_file()


def test_predict_is_lightnings_command_only(tmp_path: Path, capsys) -> None:
    """`predict CKPT IMAGES OUT` is not the folder predictor: `predict` is Lightning's, over the data module."""
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(tmp_path / "last.ckpt"), str(tmp_path / "images"), str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "unrecognized arguments" in err and "contrastseg predict --help" in err
    assert not (tmp_path / "out").exists()


def test_predict_folder_errors(checkpoint: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["predict-folder", str(checkpoint), str(tmp_path / "nowhere"), str(tmp_path / "out")])
    assert exit_info.value.code == 2 and "image folder" in capsys.readouterr().err
    images = tmp_path / "twice"
    images.mkdir()
    for name in ("frame.png", "frame.jpg"):
        cv2.imwrite(str(images / name), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(SystemExit) as exit_info:
        main(["predict-folder", str(checkpoint), str(images), str(tmp_path / "out")])
    assert exit_info.value.code == 2 and "share a name" in capsys.readouterr().err and not (tmp_path / "out").exists()


def _phone_photo(images: Path) -> None:
    """A 64x96 photo tagged "rotated 90°" (EXIF orientation 6), as phones save them."""
    from PIL import Image

    images.mkdir()
    image, _ = render_scene(np.random.default_rng(0), 64, 96)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(image).save(images / "phone.jpg", exif=exif, quality=95)


def test_predict_folder_reads_the_raw_pixel_grid(checkpoint: Path, tmp_path: Path) -> None:
    """The labels have the stored size and grid (EXIF orientation ignored, as in training)."""
    _phone_photo(tmp_path / "images")
    with pytest.raises(SystemExit) as exit_info:
        main(["predict-folder", str(checkpoint), str(tmp_path / "images"), str(tmp_path / "out")])
    assert exit_info.value.code == 0
    assert cv2.imread(str(tmp_path / "out/phone_labels.png"), cv2.IMREAD_UNCHANGED).shape == (64, 96)


def test_predict_folder_skips_hidden_files(checkpoint: Path, tmp_path: Path) -> None:
    """macOS's ``._<name>`` metadata files (and other hidden files) are not images."""
    _phone_photo(tmp_path / "images")
    (tmp_path / "images/._phone.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble metadata")
    (tmp_path / "images/.hidden.png").write_bytes(b"")
    with pytest.raises(SystemExit) as exit_info:
        main(["predict-folder", str(checkpoint), str(tmp_path / "images"), str(tmp_path / "out")])
    assert exit_info.value.code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["phone_color.png", "phone_labels.png"]
