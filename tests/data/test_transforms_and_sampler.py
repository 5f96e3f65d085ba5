from pathlib import Path

import cv2
import lightning as L
import numpy as np
import pytest
import torch

from contrastseg.data import (
    CamVidDataModule,
    PaperTrainTransform,
    RepeatFactorSampler,
    class_presence,
    repeat_factors,
)


def test_paper_transform_crop_pad_and_shapes() -> None:
    t = PaperTrainTransform((64, 80), scale_range=(0.5, 0.5), aspect_range=(1.0, 1.0))
    out = t(image=np.full((60, 60, 3), 200, np.uint8), mask=np.zeros((60, 60), np.uint8))
    assert out["image"].shape == (64, 80, 3) and out["mask"].shape == (64, 80)
    assert (out["mask"] == 255).any(), "padding is ignore"


def test_image_and_mask_stay_aligned_and_integer() -> None:
    # The image encodes each pixel's label in its red channel: after any flip, rescale or crop they must agree.
    torch.manual_seed(1)
    yy, xx = np.mgrid[0:40, 0:60]
    mask = ((yy // 8) * 3 + xx // 8) % 9  # 8x8 blocks of 9 labels
    mask = mask.astype(np.uint8)
    image = np.stack([mask * 20, np.zeros_like(mask), np.zeros_like(mask)], axis=-1).astype(np.uint8)
    t = PaperTrainTransform((32, 48), scale_range=(0.5, 2.0), color_jitter=False)
    for _ in range(30):
        out = t(image=image, mask=mask)
        m, img = out["mask"], out["image"]
        assert m.shape == (32, 48) and img.shape == (32, 48, 3) and m.dtype == np.uint8
        assert set(np.unique(m).tolist()) <= set(range(9)) | {255}, "nearest resampling adds no new values"
        # Away from label edges (3x3 neighbourhood constant) bilinear resampling is exact: image and mask must agree.
        padded = np.pad(m.astype(np.int64), 1, constant_values=-1)  # crop borders are never interior
        windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3))  # (32, 48, 3, 3)
        interior = (windows == m[..., None, None]).all(axis=(-1, -2)) & (m != 255)
        agree = (img[..., 0][interior] == m[interior].astype(np.int64) * 20).mean()
        assert interior.sum() > 50 and agree > 0.99, agree


def _dominated_share(cat_max_ratio: float, trials: int = 300) -> float:
    """Share of crops in which one class covers >= 75% of the labelled pixels."""
    torch.manual_seed(0)
    mask = np.zeros((100, 100), np.uint8)
    mask[:40, :40] = 1
    t = PaperTrainTransform((50, 50), scale_range=(1, 1), aspect_range=(1, 1), cat_max_ratio=cat_max_ratio,
                            hflip=0.0, color_jitter=False)
    dominated = 0
    for _ in range(trials):
        crop = t(image=np.zeros((100, 100, 3), np.uint8), mask=mask)["mask"]
        counts = np.bincount(crop.ravel(), minlength=2)
        dominated += counts.max() / counts.sum() >= 0.75
    return dominated / trials


def test_class_ratio_crop_avoids_dominated_crops() -> None:
    assert _dominated_share(1.0) > 0.6  # without retries most crops are mostly class 0
    assert _dominated_share(0.75) < 0.2


def test_repeat_factors_follow_the_formula() -> None:
    presence = np.zeros((100, 3), bool)
    presence[:, 0] = True  # everywhere: r = 1
    presence[:5, 1] = True  # f = 0.05: r = sqrt(0.15 / 0.05)
    presence[10:40, 2] = True  # f = 0.3 > t: r = 1
    r = repeat_factors(presence, 0.15)
    np.testing.assert_allclose(r[:5], np.sqrt(3))
    np.testing.assert_allclose(r[5:], 1.0)


def test_sampler_stochastic_rounding_epochs_and_shards() -> None:
    factors = np.array([1.0, 2.5, 1.2, 3.0, 1.3])  # fractional parts sum to 1: exactly one extra copy per epoch
    sampler = RepeatFactorSampler(factors, seed=3, num_replicas=1, rank=0)
    assert len(sampler) == 9
    counts = np.zeros(5)
    for epoch in range(2000):
        sampler.set_epoch(epoch)
        idx = np.array(list(sampler))
        per = np.bincount(idx, minlength=5)
        assert len(idx) == 9 and per[0] == 1 and per[1] in (2, 3) and per[2] in (1, 2) and per[3] == 3
        counts += per
    np.testing.assert_allclose(counts / 2000, factors, atol=0.05)
    sampler.set_epoch(7)
    assert list(sampler) == list(sampler), "the epoch seed fixes the draw"
    sampler.set_epoch(8)
    eighth = list(sampler)
    sampler.set_epoch(7)
    assert list(sampler) != eighth, "another epoch, another list"
    shards = []
    for rank in range(2):
        s = RepeatFactorSampler(factors, seed=3, num_replicas=2, rank=rank)
        s.set_epoch(7)
        shards.append(list(s))
    assert len(shards[0]) == len(shards[1]) == len(s)
    whole = RepeatFactorSampler(factors, seed=3, num_replicas=1, rank=0)
    whole.set_epoch(7)
    assert sorted(shards[0] + shards[1]) == sorted(np.resize(np.array(list(whole)), 2 * len(s)).tolist())


def test_sampler_epoch_length_is_fixed_and_unbiased() -> None:
    # Lightning reads a loader's length once per fit: every epoch must have the length reported before it.
    factors = np.random.default_rng(0).uniform(1.0, 3.3, 200)
    expected_len = int(np.floor(factors).sum() + np.ceil((factors - np.floor(factors)).sum()))
    sampler = RepeatFactorSampler(factors, seed=1, num_replicas=1, rank=0)
    counts = np.zeros(200)
    for epoch in range(3000):
        sampler.set_epoch(epoch)
        idx = list(sampler)
        assert len(idx) == len(sampler) == expected_len
        per = np.bincount(idx, minlength=200)
        assert ((per == np.floor(factors)) | (per == np.floor(factors) + 1)).all()
        counts += per
    # Exact marginals plus < 1 padded item per epoch: 5 standard errors of a 3000-epoch mean is 0.046.
    np.testing.assert_allclose(counts / 3000, factors, atol=0.046)


@pytest.mark.parametrize("replicas", [2, 3])
def test_sampler_ddp_shards_equal_disjoint_covering_every_epoch(replicas: int) -> None:
    factors = np.random.default_rng(1).uniform(1.0, 2.5, 37)
    ranks = [RepeatFactorSampler(factors, seed=5, num_replicas=replicas, rank=r) for r in range(replicas)]
    whole = RepeatFactorSampler(factors, seed=5, num_replicas=1, rank=0)
    for epoch in range(5):
        for s in (*ranks, whole):
            s.set_epoch(epoch)
        shards = [list(s) for s in ranks]
        assert {len(sh) for sh in shards} == {len(ranks[0])}, "all ranks the same length, every epoch"
        full = np.resize(np.array(list(whole)), len(ranks[0]) * replicas)  # the epoch's list, wrapped to fit
        # Rank r takes positions r, r + replicas, ...: disjoint positions, together the whole (wrapped) list.
        for r, sh in enumerate(shards):
            assert sh == full[r::replicas].tolist()
        assert sorted(i for sh in shards for i in sh) == sorted(full.tolist())


class _CountingModule(L.LightningModule):
    """Counts training batches per epoch and validation runs."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.batches: list[int] = []
        self.validations = 0
        self._n = 0

    def training_step(self, batch, batch_idx):
        self._n += 1
        return (self.w * batch["image"].mean()) ** 2 + self.w ** 2

    def on_train_epoch_end(self) -> None:
        self.batches.append(self._n)
        self._n = 0

    def validation_step(self, batch, batch_idx) -> None:
        pass

    def on_validation_epoch_end(self) -> None:
        self.validations += 1

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_repeat_factor_epochs_under_the_trainer(tmp_path: Path) -> None:
    # 20 training frames; classes 1, 2 and 4 are rare, so frames 0, 1, 2, 6, 7 have fractional repeat factors
    # (sum 1.63): the old per-epoch draw had 20 to 25 items, and Lightning cut longer epochs to the first one's
    # batch count and skipped validation after shorter ones. The loader is built once (no reloading).
    rare = {0: 1, 1: 1, 2: 2, 3: 3, 4: 3, 5: 3, 6: 4, 7: 4}
    for split, n in (("train", 20), ("val", 2)):
        (tmp_path / split).mkdir()
        (tmp_path / f"{split}annot").mkdir()
        for i in range(n):
            mask = np.zeros((8, 12), np.uint8)
            mask[:, :3] = rare.get(i, 0) if split == "train" else 0
            cv2.imwrite(str(tmp_path / split / f"f{i}.png"), np.full((8, 12, 3), 100, np.uint8))
            cv2.imwrite(str(tmp_path / f"{split}annot" / f"f{i}.png"), mask)
    dm = CamVidDataModule(root=str(tmp_path), crop_size=(8, 12), repeat_factor_threshold=0.15,
                          cache_dir=str(tmp_path / "cache"), seed=2, batch_size=2, num_workers=0)
    model = _CountingModule()
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    inner = dm._train_sampler.inner
    assert isinstance(inner, RepeatFactorSampler) and len(inner) == 20 + 2
    per_epoch = []
    for epoch in range(3):
        inner.set_epoch(epoch)
        per_epoch.append(len(list(inner)) // dm.batch_size)  # drop_last
    assert model.batches == per_epoch == [11, 11, 11] and trainer.num_training_batches == 11
    assert model.validations == 3, "validation after every epoch"


def test_class_presence_is_cached(tmp_path) -> None:
    masks = [np.array([[0, 1]]), np.array([[2, 255]])]

    class Fake(torch.utils.data.Dataset):
        cache_key = "two masks"

        def __len__(self):
            return 2

        def load_mask(self, i):
            return masks[i]

    presence = class_presence(Fake(), 3, cache_dir=tmp_path)
    assert presence.tolist() == [[True, True, False], [False, False, True]]
    masks.clear()  # a second call must not read the data again
    assert class_presence(Fake(), 3, cache_dir=tmp_path).tolist() == presence.tolist()


def test_neighbouring_seeds_do_not_share_epoch_orders() -> None:
    """With ``seed + epoch`` shuffling, seed 1's epoch e was seed 0's epoch e + 1: the seeds of a sweep shared
    most of their data order. Both training samplers now draw unrelated orders for neighbouring seeds."""
    from contrastseg.data import SyntheticDataModule

    def orders(sampler_for_seed, seed):
        sampler = sampler_for_seed(seed)
        out = []
        for epoch in range(4):
            sampler.set_epoch(epoch)
            out.append(list(sampler))
        return out

    def plain(seed):
        return SyntheticDataModule(seed=seed).train_sampler(range(40), 1, 0)

    def repeat(seed):
        return RepeatFactorSampler(np.linspace(1.0, 2.5, 40), seed=seed, num_replicas=1, rank=0)

    for sampler_for_seed in (plain, repeat):
        a, b = orders(sampler_for_seed, 0), orders(sampler_for_seed, 1)
        assert a[0] != a[1]  # a new order every epoch
        assert all(b[e] != a[e + 1] for e in range(3)), sampler_for_seed.__name__
