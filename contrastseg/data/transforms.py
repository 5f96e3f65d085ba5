"""The training augmentation (an albumentations pipeline), the conversion to normalised tensors and back to RGB."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch

from contrastseg.data.paper_ops import ClassRatioCrop, RandomScaleAspect

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "PaperTrainTransform", "Transform", "denormalize", "to_tensors",
           "train_transform"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Transform = Callable[..., dict[str, Any]]
"""An albumentations-style callable: ``transform(image=HxWx3 uint8, mask=HxW) -> {"image", "mask"}``."""

# albumentations 2 renamed PadIfNeeded's value / mask_value (1.4) to fill / fill_mask.
_PAD_FILL = ("fill", "fill_mask") if int(A.__version__.split(".")[0]) >= 2 else ("value", "mask_value")


def train_transform(
    crop_size: Sequence[int], *, scale_range: Sequence[float] = (0.5, 2.0), hflip: float = 0.5,
    color_jitter: bool = True, ignore_index: int = 255,
) -> PaperTrainTransform:
    """Random scale, pad (image 0, mask ``ignore_index``), random crop, horizontal flip and colour jitter.

    :class:`PaperTrainTransform` without aspect jitter and without class-ratio crop retries (albumentations'
    ``RandomCrop``; one augmentation implementation for every data module).

    Args:
        crop_size: ``(height, width)`` of the training crop.
        scale_range: random rescale factor range.
        hflip: probability of a horizontal flip.
        color_jitter: brightness/contrast/saturation in [2/3, 1.5] and hue +-0.05, as the authors trained.
        ignore_index: the mask's ignore value (padding).
    """
    return PaperTrainTransform(crop_size, scale_range=scale_range, aspect_range=(1.0, 1.0), cat_max_ratio=1.0,
                               crop_tries=1, hflip=hflip, color_jitter=color_jitter,
                               ignore_index=ignore_index)


def to_tensors(
    image: np.ndarray, mask: np.ndarray, *, mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(H, W, 3)`` uint8 RGB and ``(H, W)`` integer mask -> normalised ``(3, H, W)`` float32 and ``(H, W)`` int64.

    ``(image / 255 - mean) / std`` by albumentations' ``Normalize`` (a lookup table for uint8 images), for every
    split: the training augmentation leaves the image uint8.
    """
    x = _normalize(tuple(mean), tuple(std))(image=np.ascontiguousarray(image))["image"]
    return torch.from_numpy(x).permute(2, 0, 1), torch.from_numpy(np.ascontiguousarray(mask)).long()  # (3, H, W)


@lru_cache(maxsize=8)
def _normalize(mean: tuple[float, ...], std: tuple[float, ...]) -> A.Normalize:
    return A.Normalize(mean=mean, std=std, max_pixel_value=255.0, p=1.0)


def denormalize(image: torch.Tensor, *, mean: Sequence[float] = IMAGENET_MEAN,
                std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """A normalised ``(3, H, W)`` tensor (as the data modules yield) -> ``(H, W, 3)`` uint8 RGB."""
    x = image.detach().float().cpu() * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
    return (x.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)  # (3, H, W) -> (H, W, 3)


class PaperTrainTransform:
    """The authors' training augmentation, one random draw per call from the worker's torch seed.

    An albumentations pipeline (``self.pipeline``): random rescale in ``scale_range`` with aspect jitter
    (``RandomScaleAspect``), ``PadIfNeeded`` to the crop at the bottom and right (image 0, mask ``ignore_index``), a
    random crop retried up to ``crop_tries`` times until no class covers ``cat_max_ratio`` or more of its labelled
    pixels (``ClassRatioCrop``; ``RandomCrop`` when ``cat_max_ratio >= 1`` or ``crop_tries <= 1``),
    ``HorizontalFlip`` and ``ColorJitter``. The two steps albumentations has no transform for are ours, as
    albumentations transforms, in ``contrastseg.data.paper_ops``. The image stays uint8; :func:`to_tensors`
    normalises it (ImageNet mean and std), as it does every split's.

    Args:
        crop_size: ``(height, width)``.
        scale_range: rescale factor range (0.5, 2.0).
        aspect_range: extra factor on the width (0.9, 1.1).
        cat_max_ratio: maximal share of one class in an accepted crop (0.75; 1.0 disables the retries).
        crop_tries: crop attempts before the last one is kept (10).
        hflip: flip probability (0.5).
        color_jitter: brightness, contrast, saturation in [2/3, 1.5] and hue +-0.05 (in a random order).
        ignore_index: the mask's ignore value, used for padding and excluded from the class ratio.
    """

    def __init__(
        self, crop_size: Sequence[int], *, scale_range: Sequence[float] = (0.5, 2.0),
        aspect_range: Sequence[float] = (0.9, 1.1), cat_max_ratio: float = 0.75, crop_tries: int = 10,
        hflip: float = 0.5, color_jitter: bool = True, ignore_index: int = 255,
    ) -> None:
        self.crop = ch, cw = (int(crop_size[0]), int(crop_size[1]))
        self.scale_range, self.aspect_range = tuple(scale_range), tuple(aspect_range)
        self.cat_max_ratio, self.crop_tries, self.hflip, self.ignore_index = cat_max_ratio, crop_tries, hflip, ignore_index
        retries = cat_max_ratio < 1 and crop_tries > 1
        self.pipeline = A.Compose([
            RandomScaleAspect(self.scale_range, self.aspect_range),
            A.PadIfNeeded(ch, cw, position="top_left", border_mode=cv2.BORDER_CONSTANT,
                          **dict(zip(_PAD_FILL, (0, ignore_index)))),
            ClassRatioCrop(ch, cw, cat_max_ratio=cat_max_ratio, tries=crop_tries, ignore_index=ignore_index)
            if retries else A.RandomCrop(ch, cw),
            A.HorizontalFlip(p=hflip),
            *([A.ColorJitter(brightness=(2 / 3, 1.5), contrast=(2 / 3, 1.5), saturation=(2 / 3, 1.5), hue=0.05,
                             p=1.0)] if color_jitter else []),
        ])

    def __call__(self, *, image: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        seed = int(torch.randint(0, 2**62, (1,)))  # torch is seeded per item (contrastseg.data.resumable)
        # One random stream that the ops draw from in turn. Compose.set_random_seed would give every op its own
        # generator with the same seed, so their first draws would be equal: a flip exactly when the scale is
        # below the middle of its range.
        self.pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))
        out = self.pipeline(image=image, mask=mask)
        return {"image": np.ascontiguousarray(out["image"]), "mask": np.ascontiguousarray(out["mask"])}
