"""What the balanced sampler picks: anchor positions per scale in image coordinates, and a plot of them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from contrastseg.losses.multiscale import downsample_labels
from contrastseg.losses.sampling import sample_anchor_indices
from contrastseg.viz._mpl import pyplot
from contrastseg.viz.masks import Palette, legend_handles

__all__ = ["AnchorSet", "pair_pixel_counts", "plot_anchors", "sample_anchor_sets"]


class AnchorSet(NamedTuple):
    """The anchors of one scale, located in the input image.

    Attributes:
        stride: the scale's stride.
        image: ``(N,)`` batch index of each anchor.
        y: ``(N,)`` row in the input image of the label pixel the anchor was labelled with.
        x: ``(N,)`` column in the input image.
        label: ``(N,)`` class of each anchor.
        views: ``V``, anchors per present (image, class) pair.
        pairs: ``T``, present (image, class) pairs.
    """

    stride: int
    image: Tensor
    y: Tensor
    x: Tensor
    label: Tensor
    views: int
    pairs: int


def sample_anchor_sets(
    labels: Tensor, strides: Sequence[int], *, sizes: Sequence[Sequence[int]] | None = None, ignore_index: int = 255,
    min_views_per_class: int = 5, max_views_per_class: int = 2500, max_anchors: int = 10000,
    generator: torch.Generator | None = None,
) -> list[AnchorSet]:
    """Run the loss's sampler at every scale and map each anchor back to the input pixel that labels it.

    The labels of a scale come from ``contrastseg.losses.multiscale.downsample_labels`` exactly as in the
    loss, and the same function applied to the pixel coordinates gives the source pixel of every feature
    position, so ``labels[a.image, a.y, a.x] == a.label`` for every returned anchor.

    Args:
        labels: ``(B, H, W)`` labels at input resolution.
        strides: stride of each scale, fine to coarse (``model.feature_strides``).
        sizes: ``(h, w)`` per scale; ``None``: ``ceil(H / s), ceil(W / s)``, the encoders' contract.
        ignore_index: label never sampled.
        min_views_per_class: see :func:`~contrastseg.losses.sample_balanced_anchors`.
        max_views_per_class: cap on ``V``.
        max_anchors: cap on ``V * T``.
        generator: random source for reproducible draws.
    """
    _, height, width = labels.shape
    rows = torch.arange(height, device=labels.device).view(1, height, 1).expand(1, height, width)  # (1, H, W)
    cols = torch.arange(width, device=labels.device).view(1, 1, width).expand(1, height, width)  # (1, H, W)
    out = []
    for i, s in enumerate(strides):
        size = (math.ceil(height / s), math.ceil(width / s)) if sizes is None else tuple(sizes[i])
        labels_s = downsample_labels(labels, size, s)
        src_y = downsample_labels(rows, size, s)[0].reshape(-1)  # (1, h, w) -> (h*w,) source row per position
        src_x = downsample_labels(cols, size, s)[0].reshape(-1)  # (h*w,) source column
        index, anchor_labels = sample_anchor_indices(
            labels_s, ignore_index=ignore_index, min_views_per_class=min_views_per_class,
            max_views_per_class=max_views_per_class, max_anchors=max_anchors, generator=generator)
        hw = size[0] * size[1]
        image = index // hw  # (N,)
        # Pairs are runs of V consecutive anchors in (class, image) order: count where (class, image) changes.
        changes = (image[1:] != image[:-1]) | (anchor_labels[1:] != anchor_labels[:-1])  # (N-1,)
        pairs = int(changes.sum()) + 1 if index.numel() else 0
        out.append(AnchorSet(stride=int(s), image=image, y=src_y[index % hw], x=src_x[index % hw],
                             label=anchor_labels, views=index.numel() // max(pairs, 1), pairs=pairs))
    return out


def pair_pixel_counts(labels_s: Tensor, num_classes: int, *, ignore_index: int = 255) -> Tensor:
    """``(B, C)`` labelled pixels of every (image, class) pair of a batch at one scale: the table the
    sampler's ``K`` and ``V`` come from.

    ``contrastseg.data.statistics.class_pixel_counts`` counts the same per item of a whole dataset (cached,
    for class weights); this counts one batch of label maps, on their device.

    Args:
        labels_s: ``(B, h, w)`` integer labels at the scale's resolution.
        num_classes: ``C``; values outside ``0..C-1`` and ``ignore_index`` are not counted.
        ignore_index: label never counted.
    """
    b = labels_s.shape[0]
    flat = labels_s.reshape(b, -1).long()  # (B, h, w) -> (B, h*w)
    valid = (flat != ignore_index) & (flat >= 0) & (flat < num_classes)
    key = torch.arange(b, device=flat.device)[:, None] * num_classes + flat.clamp(0, num_classes - 1)  # (B, h*w)
    counts = torch.bincount(key[valid], minlength=b * num_classes)
    return counts.view(b, num_classes)  # (B*C,) -> (B, C)


def plot_anchors(image: np.ndarray, anchor_sets: Sequence[AnchorSet], *, palette: Palette,
                 class_names: Sequence[str] | None = None, batch_index: int = 0, marker_size: float = 10.0,
                 size: float = 3.0) -> Any:
    """One panel per scale: the (faded) image with that scale's anchors of image ``batch_index`` on top.

    Each anchor is a dot in its class colour at the input pixel that labels it; the panel title gives the
    stride, ``V`` (anchors per (image, class) pair, the same for every pair of the batch) and ``T``.

    Args:
        image: ``(H, W, 3)`` uint8 RGB of batch element ``batch_index``.
        anchor_sets: :func:`sample_anchor_sets` output.
        palette: dataset palette.
        class_names: adds a legend of the classes when given.
        batch_index: which image of the batch is drawn.
        marker_size: scatter marker area.
        size: inches per panel.

    Returns:
        The matplotlib Figure; ``fig.axes[i].collections[0]`` holds scale ``i``'s anchors as ``(x, y)`` offsets.
    """
    plt = pyplot()
    colours = np.asarray(palette, dtype=np.float32).reshape(-1, 3) / 255
    h, w = image.shape[:2]
    fig, axes = plt.subplots(1, len(anchor_sets), figsize=(size * len(anchor_sets) * w / h + 0.2, size + 0.6),
                             squeeze=False)
    for ax, a in zip(axes[0], anchor_sets):
        mine = (a.image == batch_index).cpu().numpy()
        x, y, lab = a.x.cpu().numpy()[mine], a.y.cpu().numpy()[mine], a.label.cpu().numpy()[mine]
        ax.imshow((np.asarray(image) * 0.55 + 255 * 0.45).astype(np.uint8))
        ax.scatter(x, y, s=marker_size, c=colours[lab] if len(lab) else "k", edgecolors="k", linewidths=0.3)
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        ax.set_title(f"stride {a.stride}: V={a.views}, T={a.pairs}\n{len(lab)} anchors in this image", fontsize=9)
        ax.set_axis_off()
    if class_names is not None:
        fig.legend(handles=legend_handles(class_names, palette), loc="lower center", ncol=min(len(class_names), 8),
                   frameon=False, fontsize=8)
    for _ in range(2):  # one pass leaves the two-line titles of tickless axes partly above the figure (matplotlib)
        fig.tight_layout(rect=(0, 0.08 if class_names is not None else 0, 1, 1))
    return fig
