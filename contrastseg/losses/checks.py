"""Shape and option checks of the contrastive losses' inputs: a clear ``ValueError`` naming the argument and its
shape instead of a silently wrong value. Shapes and Python numbers only: nothing here reads a tensor's values (which
would be a host synchronisation on a GPU). Also the warning for an anchor budget that draws nothing."""

from __future__ import annotations

import math
import numbers
import warnings

import torch
from torch import Tensor

__all__ = ["AnchorBudgetWarning", "check_input_labels", "check_integer_labels", "check_sampling_options",
           "check_temperature", "warn_anchor_budget"]

_BUDGET_WARNED = False  # AnchorBudgetWarning is shown once per process: its cause recurs at every step of a run


class AnchorBudgetWarning(UserWarning):
    """``max_anchors`` is below the number ``T`` of present (image, class) pairs of a scale: ``V = max_anchors // T``
    is 0, the scale draws no anchors and its contrastive terms are an exact 0."""


def warn_anchor_budget(starved: list[tuple[str, int]], max_anchors: int) -> None:
    """Warn (:class:`AnchorBudgetWarning`) that scales drew nothing because ``max_anchors < T``; once per process.

    The flag here, not the ``warnings`` filters, makes it once: under ``simplefilter("always")`` (pytest ``-W``,
    some loggers) a plain warning would repeat at every step.

    Args:
        starved: ``(scale name, T)`` of every scale with pairs but ``V = 0``.
        max_anchors: the cap on ``V * T``.
    """
    global _BUDGET_WARNED
    if _BUDGET_WARNED:
        return
    _BUDGET_WARNED = True
    where = ", ".join(f"T={t} at {name}" for name, t in starved)
    warnings.warn(
        f"max_anchors={max_anchors} is below the number of present (image, class) pairs ({where}): V = max_anchors "
        f"// T = 0, so no anchors are drawn there and those contrastive terms are an exact 0, without any learning "
        f"signal. To fix it, raise max_anchors to several times T (e.g. {10 * max(t for _, t in starved)} for 10 "
        "anchors per pair) or lower the batch size. (Shown once per process.)", AnchorBudgetWarning, stacklevel=4)


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
