import numpy as np
import torch

from contrastseg.data import PaperTrainTransform, RepeatFactorSampler, class_presence, repeat_factors


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
    factors = np.array([1.0, 2.5, 1.2, 3.0])
    sampler = RepeatFactorSampler(factors, seed=3, num_replicas=1, rank=0)
    counts = np.zeros(4)
    for epoch in range(2000):
        sampler.set_epoch(epoch)
        idx = np.array(list(sampler))
        per = np.bincount(idx, minlength=4)
        assert per[0] == 1 and per[1] in (2, 3) and per[2] in (1, 2) and per[3] == 3
        counts += per
    np.testing.assert_allclose(counts / 2000, factors, atol=0.05)
    sampler.set_epoch(7)
    assert list(sampler) == list(sampler), "the epoch seed fixes the draw"
    shards = []
    for rank in range(2):
        s = RepeatFactorSampler(factors, seed=3, num_replicas=2, rank=rank)
        s.set_epoch(7)
        shards.append(list(s))
    assert len(shards[0]) == len(shards[1]) == len(s)
    whole = RepeatFactorSampler(factors, seed=3, num_replicas=1, rank=0)
    whole.set_epoch(7)
    assert sorted(shards[0] + shards[1]) == sorted(np.resize(np.array(list(whole)), 2 * len(s)).tolist())


def test_class_presence_is_cached(tmp_path) -> None:
    masks = [np.array([[0, 1]]), np.array([[2, 255]])]

    class Fake(torch.utils.data.Dataset):
        pairs = [("a", "la"), ("b", "lb")]

        def __len__(self):
            return 2

        def load(self, i):
            return None, masks[i]

    presence = class_presence(Fake(), 3, cache_dir=tmp_path)
    assert presence.tolist() == [[True, True, False], [False, False, True]]
    masks.clear()  # a second call must not read the data again
    assert class_presence(Fake(), 3, cache_dir=tmp_path).tolist() == presence.tolist()
