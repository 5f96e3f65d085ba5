"""Image/mask transforms (albumentations), the conversion to normalised tensors and back to RGB."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "PaperTrainTransform", "Transform", "denormalize", "to_tensors",
           "train_transform"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Transform = Callable[..., dict[str, Any]]
"""An albumentations-style callable: ``transform(image=HxWx3 uint8, mask=HxW) -> {"image", "mask"}``."""


def train_transform(
    crop_size: Sequence[int], *, scale_range: Sequence[float] = (0.5, 2.0), hflip: float = 0.5,
    color_jitter: bool = True, ignore_index: int = 255,
) -> PaperTrainTransform:
    """Random scale, pad (image 0, mask ``ignore_index``), random crop, horizontal flip and colour jitter.

    :class:`PaperTrainTransform` without aspect jitter and without class-ratio crop retries (one augmentation
    implementation for every data module).

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
    """``(H, W, 3)`` uint8 RGB and ``(H, W)`` integer mask -> normalised ``(3, H, W)`` float32 and ``(H, W)`` int64."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)  # (H, W, 3) -> (3, H, W)
    x = (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    return x, torch.from_numpy(np.ascontiguousarray(mask)).long()


def denormalize(image: torch.Tensor, *, mean: Sequence[float] = IMAGENET_MEAN,
                std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """A normalised ``(3, H, W)`` tensor (as the data modules yield) -> ``(H, W, 3)`` uint8 RGB."""
    x = image.detach().float().cpu() * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
    return (x.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)  # (3, H, W) -> (H, W, 3)


class PaperTrainTransform:
    """The authors' training augmentation, one random draw per call from the worker's torch seed.

    Random rescale in ``scale_range`` with aspect jitter, pad to the crop (image 0, mask ``ignore_index``), a random
    crop retried up to ``crop_tries`` times until no class covers more than ``cat_max_ratio`` of its labelled
    pixels, horizontal flip, colour jitter (albumentations). The class-ratio crop is ours: albumentations has none.

    Args:
        crop_size: ``(height, width)``.
        scale_range: rescale factor range (0.5, 2.0).
        aspect_range: extra factor on the width (0.9, 1.1).
        cat_max_ratio: maximal share of one class in an accepted crop (0.75; 1.0 disables the retries).
        crop_tries: crop attempts before the last one is kept (10).
        hflip: flip probability (0.5).
        color_jitter: brightness, contrast, saturation in [2/3, 1.5] and hue +-0.05.
        ignore_index: the mask's ignore value, used for padding and excluded from the class ratio.
    """

    def __init__(
        self, crop_size: Sequence[int], *, scale_range: Sequence[float] = (0.5, 2.0),
        aspect_range: Sequence[float] = (0.9, 1.1), cat_max_ratio: float = 0.75, crop_tries: int = 10,
        hflip: float = 0.5, color_jitter: bool = True, ignore_index: int = 255,
    ) -> None:
        self.crop = (int(crop_size[0]), int(crop_size[1]))
        self.scale_range, self.aspect_range = tuple(scale_range), tuple(aspect_range)
        self.cat_max_ratio, self.crop_tries, self.hflip, self.ignore_index = cat_max_ratio, crop_tries, hflip, ignore_index
        self.jitter = A.ColorJitter(brightness=(2 / 3, 1.5), contrast=(2 / 3, 1.5), saturation=(2 / 3, 1.5),
                                    hue=0.05, p=1.0) if color_jitter else None

    def __call__(self, *, image: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,))))  # torch is seeded per DataLoader worker
        scale = rng.uniform(*self.scale_range)
        sy, sx = scale, scale * rng.uniform(*self.aspect_range)
        h, w = mask.shape
        size = (max(1, round(w * sx)), max(1, round(h * sy)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        # NEAREST_EXACT samples pixel centres like INTER_LINEAR does; plain INTER_NEAREST is off by half a pixel.
        mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST_EXACT)
        ch, cw = self.crop
        pad_h, pad_w = max(ch - mask.shape[0], 0), max(cw - mask.shape[1], 0)
        if pad_h or pad_w:
            image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)))
            mask = np.pad(mask, ((0, pad_h), (0, pad_w)), constant_values=self.ignore_index)
        for _ in range(self.crop_tries):
            y0, x0 = rng.integers(0, mask.shape[0] - ch + 1), rng.integers(0, mask.shape[1] - cw + 1)
            crop = mask[y0:y0 + ch, x0:x0 + cw]
            counts = np.bincount(crop[crop != self.ignore_index].ravel())
            counts = counts[counts > 0]
            if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                break
        image, mask = image[y0:y0 + ch, x0:x0 + cw], mask[y0:y0 + ch, x0:x0 + cw]
        if rng.uniform() < self.hflip:
            image, mask = image[:, ::-1], mask[:, ::-1]
        if self.jitter is not None:
            self.jitter.set_random_seed(int(rng.integers(0, 2**31)))
            image = self.jitter(image=np.ascontiguousarray(image))["image"]
        return {"image": np.ascontiguousarray(image), "mask": np.ascontiguousarray(mask)}
