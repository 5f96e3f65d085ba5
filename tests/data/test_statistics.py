import os

import cv2
import numpy as np
import pytest
import torch
from lightning import Trainer

from contrastseg import ContrastSegModule
from contrastseg.data import FolderDataset, SyntheticDataModule, SyntheticDataset
from contrastseg.data.statistics import class_pixel_counts, median_frequency_weights
from contrastseg.errors import ConfigError
from contrastseg.losses import CrossEntropy
from contrastseg.models import Encoder, SegmentationModel


class _Masks(torch.utils.data.Dataset):
    def __init__(self, masks):
        self.masks = masks

    def __len__(self):
        return len(self.masks)

    def __getitem__(self, i):
        return {"image": None, "mask": self.masks[i]}


MASKS = [np.array([[0, 0, 1], [255, 0, 0]]), np.array([[2, 2, 2], [2, 2, 1]]), np.array([[0, 0], [0, 7]])]


def test_counts_and_median_frequency_against_a_loop(tmp_path) -> None:
    counts = class_pixel_counts(_Masks(MASKS), 3, cache_dir=tmp_path)
    assert counts.tolist() == [[4, 1, 0], [0, 1, 5], [3, 0, 0]]  # 255 and 7 (out of range) not counted
    # f_c = pixels of c / labelled pixels of the images containing c (SegNet's definition), by hand:
    freq = {0: (4 + 3) / (5 + 3), 1: (1 + 1) / (5 + 6), 2: 5 / 6}
    median = sorted(freq.values())[1]
    assert np.allclose(median_frequency_weights(counts), [median / freq[c] for c in range(3)])


class _KeyedMasks(_Masks):
    cache_key = "three masks"


def test_counts_are_cached(tmp_path, monkeypatch) -> None:
    class_pixel_counts(_KeyedMasks(MASKS), 3, cache_dir=tmp_path)
    assert [p.name[:19] for p in tmp_path.iterdir()] == ["pixels-_KeyedMasks-"]  # no temporary file left
    monkeypatch.setattr(_Masks, "__getitem__", lambda self, i: pytest.fail("recomputed instead of cached"))
    assert class_pixel_counts(_KeyedMasks(MASKS), 3, cache_dir=tmp_path)[1].tolist() == [0, 1, 5]


def test_a_dataset_without_a_key_is_not_cached(tmp_path) -> None:
    class_pixel_counts(_Masks(MASKS), 3, cache_dir=tmp_path)
    assert not list(tmp_path.iterdir())


def test_other_synthetic_settings_are_not_served_from_the_cache(tmp_path) -> None:
    small = class_pixel_counts(SyntheticDataset(num_samples=2, image_size=(64, 64)), 8, cache_dir=tmp_path)
    large = class_pixel_counts(SyntheticDataset(num_samples=2, image_size=(64, 96), seed=1), 8, cache_dir=tmp_path)
    assert small.sum() == 2 * 64 * 64 and large.sum() == 2 * 64 * 96
    assert len(list(tmp_path.glob("*.npy"))) == 2


def test_relabelled_files_are_recomputed(tmp_path) -> None:
    """Same label paths, new contents: the key includes each file's size and modification time."""
    for split in ("train", "trainannot"):
        (tmp_path / split).mkdir()
    cv2.imwrite(str(tmp_path / "train" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    label = tmp_path / "trainannot" / "a.png"
    cv2.imwrite(str(label), np.zeros((8, 8), np.uint8))
    cache = tmp_path / "cache"
    assert class_pixel_counts(FolderDataset(tmp_path, "train", num_classes=3), 3, cache_dir=cache)[0, 0] == 64
    cv2.imwrite(str(label), np.full((8, 8), 2, np.uint8))
    os.utime(label, ns=(label.stat().st_atime_ns, label.stat().st_mtime_ns + 10**9))  # a later edit
    assert class_pixel_counts(FolderDataset(tmp_path, "train", num_classes=3), 3, cache_dir=cache)[0, 2] == 64
    # Another label map over the same files is another table.
    relabelled = FolderDataset(tmp_path, "train", num_classes=3, label_map={2: 1})
    assert class_pixel_counts(relabelled, 3, cache_dir=cache)[0, 1] == 64


def test_absent_classes_get_weight_zero() -> None:
    # f_0 = 4 / 6, f_2 = 2 / 4, median 7 / 12; class 1 never occurs
    assert np.allclose(median_frequency_weights(np.array([[2, 0, 2], [2, 0, 0]])), [7 / 8, 0.0, 7 / 6])


def test_cross_entropy_with_median_frequency_weights_from_the_training_split(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # the default cache folder
    data = SyntheticDataModule(num_train=6, num_val=2, image_size=(32, 32), batch_size=2, num_workers=0)
    term = CrossEntropy(class_weights="median_frequency")
    module = ContrastSegModule(SegmentationModel(8, encoder=Encoder("resnet18")), num_classes=8, losses=[term])
    Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, limit_val_batches=0).fit(module, data)
    data.setup("fit")
    expected = median_frequency_weights(class_pixel_counts(data.datasets["train"], 8))
    assert torch.allclose(term.class_weights, torch.as_tensor(expected, dtype=torch.float32))
    assert list((tmp_path / ".cache" / "contrastseg").glob("pixels-SyntheticDataset-8-*.npy"))
    with pytest.raises(ConfigError, match="median_frequency"):
        CrossEntropy(class_weights="inverse")
