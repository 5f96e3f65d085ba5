"""The two steps of the paper's training augmentation that albumentations has no transform for, as albumentations
transforms (they compose with its own in ``A.Compose`` and draw from the random state it sets).

- :class:`RandomScaleAspect`: albumentations' ``RandomScale`` draws one factor for both sides (no aspect jitter),
  and ``Affine`` draws its x and y factors independently (the width factor is then not the height factor times a
  jitter in [0.9, 1.1]) and warps into a canvas of fixed size; two resizes in a row would blur the image twice.
- :class:`ClassRatioCrop`: a random crop retried until no class dominates it (mmsegmentation's ``cat_max_ratio``);
  albumentations' crops do not look at the mask's classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np

__all__ = ["ClassRatioCrop", "RandomScaleAspect"]


class RandomScaleAspect(A.DualTransform):
    """Rescale by ``s`` in ``scale_range`` (height) and ``s * a``, ``a`` in ``aspect_range`` (width), both uniform.

    The new size is rounded to whole pixels (at least 1). The image is resampled bilinearly and the mask by nearest
    neighbour at pixel centres (``INTER_NEAREST_EXACT``, the grid ``INTER_LINEAR`` samples: plain ``INTER_NEAREST``
    is off by half a pixel), so the mask holds only values it had and stays aligned with the image. Targets: image,
    mask.

    Args:
        scale_range: range of the factor on both sides.
        aspect_range: range of the extra factor on the width.
        p: probability of applying the transform.
    """

    def __init__(self, scale_range: Sequence[float] = (0.5, 2.0), aspect_range: Sequence[float] = (0.9, 1.1), *,
                 p: float = 1.0) -> None:
        super().__init__(p=p)
        self.scale_range, self.aspect_range = tuple(scale_range), tuple(aspect_range)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        h, w = data["image"].shape[:2]
        scale = self.py_random.uniform(*self.scale_range)
        aspect = self.py_random.uniform(*self.aspect_range)
        return {"size": (max(1, round(h * scale)), max(1, round(w * scale * aspect)))}  # (height, width)

    def apply(self, img: np.ndarray, size: tuple[int, int], **params: Any) -> np.ndarray:
        return cv2.resize(img, size[::-1], interpolation=cv2.INTER_LINEAR)

    def apply_to_mask(self, mask: np.ndarray, size: tuple[int, int], **params: Any) -> np.ndarray:
        return cv2.resize(mask, size[::-1], interpolation=cv2.INTER_NEAREST_EXACT)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("scale_range", "aspect_range")


class ClassRatioCrop(A.DualTransform):
    """A uniformly placed ``height x width`` crop, redrawn up to ``tries`` times until the crop holds two or more
    classes and none of them covers ``cat_max_ratio`` or more of its labelled (non-ignore) pixels; the last draw is
    kept when none qualifies. Needs the mask; the input must be at least the crop's size (pad first). Targets:
    image, mask.

    Args:
        height: crop height.
        width: crop width.
        cat_max_ratio: a class's share of the labelled pixels that makes a crop rejected (0.75 in the paper).
        tries: crops drawn at most (10 in the paper).
        ignore_index: the mask's ignore value, left out of the shares.
        p: probability of applying the transform.
    """

    def __init__(self, height: int, width: int, *, cat_max_ratio: float = 0.75, tries: int = 10,
                 ignore_index: int = 255, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.height, self.width = int(height), int(width)
        self.cat_max_ratio, self.tries, self.ignore_index = cat_max_ratio, int(tries), ignore_index

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        if data.get("mask") is None:
            raise ValueError("ClassRatioCrop needs the mask: call the transform with image=... and mask=...")
        mask, h, w = data["mask"], self.height, self.width
        if mask.shape[0] < h or mask.shape[1] < w:
            raise ValueError(f"ClassRatioCrop: the input ({mask.shape[0]}x{mask.shape[1]}) is smaller than the crop "
                             f"({h}x{w}); pad it first (PadIfNeeded)")
        for _ in range(max(self.tries, 1)):
            y0 = int(self.random_generator.integers(0, mask.shape[0] - h + 1))
            x0 = int(self.random_generator.integers(0, mask.shape[1] - w + 1))
            crop = mask[y0:y0 + h, x0:x0 + w]
            counts = np.bincount(crop[crop != self.ignore_index].ravel())
            counts = counts[counts > 0]
            if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                break
        return {"y0": y0, "x0": x0}

    def apply(self, img: np.ndarray, y0: int, x0: int, **params: Any) -> np.ndarray:
        return img[y0:y0 + self.height, x0:x0 + self.width]

    def apply_to_mask(self, mask: np.ndarray, y0: int, x0: int, **params: Any) -> np.ndarray:
        return mask[y0:y0 + self.height, x0:x0 + self.width]

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("height", "width", "cat_max_ratio", "tries", "ignore_index")
