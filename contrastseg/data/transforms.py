"""Image/mask transforms (albumentations) and the conversion to normalised tensors."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Transform", "to_tensors", "train_transform"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Transform = Callable[..., dict[str, Any]]
"""An albumentations-style callable: ``transform(image=HxWx3 uint8, mask=HxW) -> {"image", "mask"}``."""


def train_transform(
    crop_size: Sequence[int], *, scale_range: Sequence[float] = (0.5, 2.0), hflip: float = 0.5,
    color_jitter: bool = True,
) -> A.Compose:
    """Random scale, pad (image 0, mask 255), random crop, horizontal flip and colour jitter.

    Args:
        crop_size: ``(height, width)`` of the training crop.
        scale_range: random rescale factor range.
        hflip: probability of a horizontal flip.
        color_jitter: brightness/contrast/saturation in [2/3, 1.5] and hue +-0.05, as the authors trained.
    """
    h, w = int(crop_size[0]), int(crop_size[1])
    lo, hi = float(scale_range[0]), float(scale_range[1])
    ops: list[Any] = [
        A.RandomScale(scale_limit=(lo - 1.0, hi - 1.0), interpolation=cv2.INTER_LINEAR, p=1.0),
        A.PadIfNeeded(min_height=h, min_width=w, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=255),
        A.RandomCrop(height=h, width=w),
        A.HorizontalFlip(p=hflip),
    ]
    if color_jitter:
        ops.append(A.ColorJitter(brightness=(2 / 3, 1.5), contrast=(2 / 3, 1.5), saturation=(2 / 3, 1.5),
                                 hue=0.05, p=1.0))
    return A.Compose(ops)


def to_tensors(
    image: np.ndarray, mask: np.ndarray, *, mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(H, W, 3)`` uint8 RGB and ``(H, W)`` integer mask -> normalised ``(3, H, W)`` float32 and ``(H, W)`` int64."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)  # (H, W, 3) -> (3, H, W)
    x = (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    return x, torch.from_numpy(np.ascontiguousarray(mask)).long()
