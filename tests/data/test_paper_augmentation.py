"""The paper's training augmentation on albumentations: shapes, values, padding and the distributions of its draws
(statistical checks over seeded draws, with tolerances of about 4 standard errors)."""

import albumentations as A
import numpy as np
import pytest
import torch

from contrastseg.data.paper_ops import ClassRatioCrop, RandomScaleAspect
from contrastseg.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PaperTrainTransform,
    to_tensors,
    train_transform,
)


def _draws(transform, image, mask, n, seed=0):
    torch.manual_seed(seed)
    return [transform(image=image, mask=mask) for _ in range(n)]


@pytest.mark.parametrize("make", [lambda c: PaperTrainTransform(c), lambda c: train_transform(c)])
@pytest.mark.parametrize("size", [(37, 53), (120, 90)])
def test_shapes_and_mask_values(make, size) -> None:
    rng = np.random.default_rng(0)
    mask = rng.choice(np.array([0, 3, 7, 255], np.uint8), size)
    image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    for out in _draws(make((48, 64)), image, mask, 40):
        assert out["image"].shape == (48, 64, 3) and out["image"].dtype == np.uint8
        assert out["mask"].shape == (48, 64) and out["mask"].dtype == np.uint8
        assert set(np.unique(out["mask"]).tolist()) <= {0, 3, 7, 255}
        assert out["image"].flags["C_CONTIGUOUS"] and out["mask"].flags["C_CONTIGUOUS"]


def test_wide_masks_keep_their_dtype_and_values() -> None:
    mask = np.full((40, 40), 300, np.int32)
    mask[:, :20] = 17
    outs = _draws(PaperTrainTransform((64, 64)), np.zeros((40, 40, 3), np.uint8), mask, 10)
    assert all(o["mask"].dtype == np.int32 and set(np.unique(o["mask"]).tolist()) <= {17, 300, 255} for o in outs)


def test_padding_is_ignore_and_black_at_the_bottom_and_right() -> None:
    t = PaperTrainTransform((64, 80), scale_range=(0.5, 0.5), aspect_range=(1, 1), hflip=0.0, color_jitter=False)
    out = t(image=np.full((60, 60, 3), 200, np.uint8), mask=np.zeros((60, 60), np.uint8))
    assert (out["mask"][:30, :30] == 0).all() and (out["image"][:30, :30] == 200).all()
    assert (out["mask"][30:] == 255).all() and (out["mask"][:, 30:] == 255).all()
    assert (out["image"][30:] == 0).all() and (out["image"][:, 30:] == 0).all()


def test_same_seed_same_draw() -> None:
    rng = np.random.default_rng(1)
    image, mask = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8), rng.integers(0, 5, (50, 70)).astype(np.uint8)
    t = PaperTrainTransform((40, 40))
    a, b, c = (_draws(t, image, mask, 3, seed) for seed in (5, 5, 6))
    assert all((x["image"] == y["image"]).all() and (x["mask"] == y["mask"]).all() for x, y in zip(a, b))
    assert any((x["image"] != y["image"]).any() for x, y in zip(a, c))


def _scale_aspect_flip(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Height factor, width/height factor and flip of ``n`` draws, read off the padding of a crop larger than any
    rescaled input (the input sits at the left of the crop, or at the right when flipped)."""
    t = PaperTrainTransform((200, 220), color_jitter=False)
    outs = _draws(t, np.zeros((100, 100, 3), np.uint8), np.zeros((100, 100), np.uint8), n)
    valid = [o["mask"] != 255 for o in outs]
    h = np.array([v.any(axis=1).sum() for v in valid])
    w = np.array([v.any(axis=0).sum() for v in valid])
    flipped = np.array([not v[:, 0].any() for v in valid])  # column 0 is padding (every draw is narrower than 220)
    return h / 100, w / h, flipped


def test_scale_aspect_and_flip_distributions() -> None:
    n = 1000
    scale, aspect, flipped = _scale_aspect_flip(n)
    # Uniform scale on [0.5, 2.0]: the ends reached, quartiles at 0.875, 1.25, 1.625 (standard error about 0.02).
    assert scale.min() >= 0.5 and scale.max() <= 2.0 and scale.min() < 0.52 and scale.max() > 1.98
    np.testing.assert_allclose(np.quantile(scale, [0.25, 0.5, 0.75]), [0.875, 1.25, 1.625], atol=0.08)
    # Aspect jitter uniform on [0.9, 1.1] (up to rounding to whole pixels), independent of the scale.
    assert aspect.min() >= 0.9 - 0.021 and aspect.max() <= 1.1 + 0.021
    np.testing.assert_allclose(np.quantile(aspect, [0.25, 0.5, 0.75]), [0.95, 1.0, 1.05], atol=0.012)
    assert abs(np.corrcoef(scale, aspect)[0, 1]) < 0.13  # standard error 0.032
    # Flip with p = 0.5 (standard error 0.016), independent of the scale: one seed shared by every op would make
    # them equal draws.
    assert abs(flipped.mean() - 0.5) < 0.065
    assert abs(np.corrcoef(scale, flipped)[0, 1]) < 0.13 and abs(np.corrcoef(aspect, flipped)[0, 1]) < 0.13


def test_colour_jitter_brightness_range() -> None:
    """On a grey image only brightness acts (contrast, saturation and hue leave grey as it is): 120 * [2/3, 1.5]."""
    t = PaperTrainTransform((32, 32), scale_range=(1, 1), aspect_range=(1, 1), hflip=0.0)
    values = np.array([o["image"].mean() for o in _draws(t, np.full((32, 32, 3), 120, np.uint8),
                                                          np.zeros((32, 32), np.uint8), 400)])
    assert values.min() >= 79 and values.max() <= 181
    assert values.min() < 86 and values.max() > 174
    assert abs(np.median(values) - 120 * (2 / 3 + 1.5) / 2) < 8  # uniform factor: median 1.083


def test_to_tensors_normalises_with_imagenet_statistics() -> None:
    image = np.random.default_rng(2).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    x, y = to_tensors(image, np.arange(30, dtype=np.uint8).reshape(6, 5))
    expected = (image.transpose(2, 0, 1) / 255.0 - np.array(IMAGENET_MEAN)[:, None, None]) / np.array(
        IMAGENET_STD)[:, None, None]  # (H, W, 3) -> (3, H, W)
    assert x.dtype == torch.float32 and x.shape == (3, 6, 5) and y.dtype == torch.int64
    np.testing.assert_allclose(x.numpy(), expected, atol=1e-6)


def test_our_ops_compose_with_albumentations_and_explain_misuse() -> None:
    pipeline = A.Compose([RandomScaleAspect((1.0, 1.0), (1.0, 1.0)), ClassRatioCrop(8, 8), A.HorizontalFlip(p=1.0)])
    mask = np.tile(np.arange(16, dtype=np.uint8) // 4, (16, 1))  # (16, 16), columns of 4 labels
    out = pipeline(image=np.zeros((16, 16, 3), np.uint8), mask=mask)
    assert out["mask"].shape == (8, 8) and (np.diff(out["mask"].astype(int), axis=1) <= 0).all()  # flipped
    with pytest.raises(ValueError, match="smaller than the crop"):
        ClassRatioCrop(32, 32)(image=np.zeros((16, 16, 3), np.uint8), mask=mask)
    with pytest.raises(ValueError, match="needs the mask"):
        ClassRatioCrop(8, 8)(image=np.zeros((16, 16, 3), np.uint8))
