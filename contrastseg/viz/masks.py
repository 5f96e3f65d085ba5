"""Masks as pictures: colourise with a dataset palette, overlay on an image, image | truth | prediction grids."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from contrastseg.data.transforms import denormalize
from contrastseg.viz._mpl import pyplot

__all__ = ["colourise", "denormalize", "legend_handles", "overlay", "plot_predictions"]

Palette = Sequence[Sequence[int]] | np.ndarray


def colourise(labels: np.ndarray | torch.Tensor, palette: Palette, *, ignore_index: int = 255,
              ignore_colour: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """Class map ``(H, W)`` -> RGB ``(H, W, 3)`` uint8 with ``palette[c]`` for class ``c``.

    Args:
        labels: integer class map (values ``0..C-1`` and ``ignore_index``).
        palette: ``C`` RGB triples (``datamodule.palette``).
        ignore_index: label drawn in ``ignore_colour``.
        ignore_colour: RGB of ignored pixels (black).

    Raises:
        ValueError: a label is neither a palette index nor ``ignore_index``.
    """
    labels = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    table = np.zeros((max(256, ignore_index + 1), 3), np.uint8)
    table[: len(palette)] = palette
    table[ignore_index] = ignore_colour
    values = labels.astype(np.int64)
    bad = (values < 0) | ((values >= len(palette)) & (values != ignore_index))
    if bad.any():
        raise ValueError(f"label value {int(values[bad][0])} has no palette colour ({len(palette)} classes)")
    return table[values]


def overlay(image: np.ndarray, labels: np.ndarray | torch.Tensor, palette: Palette, *, alpha: float = 0.5,
            ignore_index: int = 255) -> np.ndarray:
    """Blend the colourised ``labels`` over ``image`` ``(H, W, 3)`` uint8; ignored pixels keep the image."""
    image = np.asarray(image)
    colour = colourise(labels, palette, ignore_index=ignore_index)
    if colour.shape[:2] != image.shape[:2]:
        raise ValueError(f"image {image.shape[:2]} and labels {colour.shape[:2]} differ in size")
    labels_np = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    blend = image.astype(np.float32) * (1 - alpha) + colour.astype(np.float32) * alpha
    keep = (labels_np == ignore_index)[..., None]  # (H, W) -> (H, W, 1)
    return np.where(keep, image, blend.round().astype(np.uint8)).astype(np.uint8)


def legend_handles(class_names: Sequence[str], palette: Palette, classes: Sequence[int] | None = None) -> list:
    """Matplotlib patches naming each class in its palette colour (for ``ax.legend(handles=...)``)."""
    from matplotlib.patches import Patch

    palette = np.asarray(palette, dtype=np.float32).reshape(-1, 3) / 255
    classes = range(len(class_names)) if classes is None else classes
    return [Patch(color=tuple(palette[c]), label=class_names[c]) for c in classes]


def plot_predictions(images: Sequence[np.ndarray], targets: Sequence[np.ndarray], predictions: Sequence[np.ndarray],
                     *, palette: Palette, class_names: Sequence[str] | None = None, ignore_index: int = 255,
                     size: float = 2.5) -> Any:
    """A grid with one row per image: image | ground truth | prediction | errors (red where wrong).

    Args:
        images: ``(H, W, 3)`` uint8 RGB images (see :func:`denormalize`).
        targets: ``(H, W)`` label maps.
        predictions: ``(H, W)`` predicted class maps.
        palette: dataset palette.
        class_names: adds a legend of the classes when given.
        ignore_index: label shown black in the ground truth and never counted as an error.
        size: inches per panel.

    Returns:
        The matplotlib Figure.
    """
    plt = pyplot()
    n = len(images)
    fig, axes = plt.subplots(n, 4, figsize=(4 * size, n * size), squeeze=False)
    for row, (image, target, pred) in enumerate(zip(images, targets, predictions)):
        target, pred = np.asarray(target), np.asarray(pred)
        wrong = (target != pred) & (target != ignore_index)
        errors = np.where(wrong[..., None], np.array([230, 30, 30], np.uint8), (np.asarray(image) * 0.35).astype(np.uint8))
        panels = (image, colourise(target, palette, ignore_index=ignore_index),
                  colourise(pred, palette, ignore_index=ignore_index), errors)
        for col, (panel, title) in enumerate(zip(panels, ("image", "ground truth", "prediction", "errors"))):
            axes[row, col].imshow(panel)
            axes[row, col].set_axis_off()
            if row == 0:
                axes[row, col].set_title(title)
    if class_names is not None:
        fig.legend(handles=legend_handles(class_names, palette), loc="lower center", ncol=min(len(class_names), 8),
                   frameon=False)
        fig.tight_layout(rect=(0, 0.06, 1, 1))
    else:
        fig.tight_layout()
    return fig
