"""Shape and option checks of the contrastive losses' inputs: a clear ``ValueError`` naming the argument and its
shape instead of a silently wrong value. Shapes and Python numbers only: nothing here reads a tensor's values (which
would be a host synchronisation on a GPU)."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

__all__ = ["check_input_labels", "check_integer_labels", "check_sampling_options", "check_temperature"]

def _positive_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


def check_sampling_options(*, ignore_index: int, min_views_per_class: int, max_views_per_class: int,
                           max_anchors: int) -> None:
    """Raise ``ValueError`` unless the three counts are positive integers and ``ignore_index`` an integer.

    Args:
        ignore_index: label never sampled (any integer, 255 or 65535 for example).
        min_views_per_class: pixels a pair needs to be sampled.
        max_views_per_class: cap on ``V``.
        max_anchors: cap on ``V * T``.
    """
    for name, value in (("min_views_per_class", min_views_per_class), ("max_views_per_class", max_views_per_class),
                        ("max_anchors", max_anchors)):
        if not _positive_int(value):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not isinstance(ignore_index, numbers.Integral) or isinstance(ignore_index, bool):
        raise ValueError(f"ignore_index must be an integer label value, got {ignore_index!r}")


def check_integer_labels(labels: Tensor, name: str = "labels", *, spatial: str = "h, w") -> None:
    """Raise ``ValueError`` unless ``labels`` is a ``(B, <spatial>)`` tensor of integer class ids.

    Floating labels would be truncated to classes silently, and boolean ones are masks, not classes.

    Args:
        labels: the label map.
        name: how the error names it.
        spatial: the names of its spatial dimensions in the message.
    """
    if labels.dim() != 3:
        raise ValueError(f"{name} must be (B, {spatial}), got shape {tuple(labels.shape)}")
    dtype = labels.dtype
    if dtype.is_floating_point or dtype.is_complex or dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class ids, got {dtype} (convert with .long() if the values are "
                         "exact class ids)")


def check_input_labels(labels: Tensor) -> Tensor:
    """Full-resolution labels as ``(B, H, W)`` integers; a ``(B, 1, H, W)`` map loses its channel.

    Raises:
        ValueError: another shape, or floating or boolean labels.
    """
    if labels.dim() == 4 and labels.shape[1] == 1:
        labels = labels[:, 0]  # (B, 1, H, W) -> (B, H, W)
    elif labels.dim() != 3:
        raise ValueError(f"labels must be (B, H, W) (or (B, 1, H, W)), got shape {tuple(labels.shape)}")
    check_integer_labels(labels, spatial="H, W")
    return labels


def check_temperature(temperature: float, name: str = "temperature") -> None:
    """Raise ``ValueError`` unless ``temperature`` is a positive finite number."""
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not (
            temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"{name} must be a positive finite number, got {temperature!r}")
