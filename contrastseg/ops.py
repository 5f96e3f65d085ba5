"""Tensor operations shared by the models, the losses and evaluation."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

__all__ = ["resize"]


def resize(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize of a ``(B, C, h, w)`` map to ``size`` (``align_corners=False``, no antialiasing).

    Returns ``x`` itself when it already has that size. No dtype is changed: callers that want float32 cast first.

    Args:
        x: ``(B, C, h, w)`` feature map or logits.
        size: ``(H, W)``, any sequence of two ints (a ``torch.Size`` too).

    Returns:
        ``(B, C, H, W)``.
    """
    size = tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
