"""Balanced anchor sampling (paper Sec. 3.3), vectorised over images and classes.

Every (image, class) pair of the batch with at least ``min_views_per_class`` labelled pixels is *present*; ``K``
is the smallest pixel count of a present pair; ``V = min(K, max_views_per_class)``, reduced to
``max_anchors // T`` when ``V * T`` would exceed ``max_anchors`` (``T`` present pairs); each present pair gives
``V`` pixels drawn uniformly without replacement. Ignore pixels are never drawn.

The implementation never loops over images, classes or pairs: pair sizes come from one ``scatter_add`` over a
fixed-size table, a random permutation inside every pair comes from two sorts, and the ``V`` first pixels of every
pair are read at computed offsets. One host synchronisation reads ``(T, K)``, which the output size needs.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["sample_anchor_indices", "sample_balanced_anchors"]


def sample_anchor_indices(
    labels: Tensor,
    *,
    ignore_index: int = 255,
    min_views_per_class: int = 5,
    max_views_per_class: int = 2500,
    max_anchors: int = 10000,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Flat pixel indices of the balanced anchor set, grouped by (image, class) pair.

    Args:
        labels: ``(B, h, w)`` integer labels at the embeddings' resolution; values ``< max(256, ignore_index+1)``.
        ignore_index: label never sampled.
        min_views_per_class: pairs with fewer labelled pixels are not sampled.
        max_views_per_class: cap on ``V``.
        max_anchors: cap on ``V * T``.
        generator: random source (on ``labels.device``) for reproducible draws.

    Returns:
        ``index`` ``(N,)`` into ``labels.flatten()`` and ``anchor_labels`` ``(N,)``, with ``N = V * T``; pairs
        appear in (image, class) order, each as ``V`` consecutive entries. ``N = 0`` when no pair is present.
    """
    b, h, w = labels.shape
    device = labels.device
    n_values = max(256, ignore_index + 1)
    flat = labels.reshape(-1).long()  # (B, h, w) -> (B*h*w,)
    valid = (flat != ignore_index) & (flat >= 0)
    image = torch.arange(b, device=device).repeat_interleave(h * w)  # (B*h*w,) image index of each pixel
    # Pair key image * n_values + class; every invalid pixel goes to one extra bucket at the end.
    key = torch.where(valid, image * n_values + flat, torch.full_like(flat, b * n_values))
    counts = torch.zeros(b * n_values + 1, dtype=torch.long, device=device)
    counts.scatter_add_(0, key, torch.ones_like(key))  # (B*n_values + 1,) pixels per pair
    counts[-1] = 0
    present = counts >= max(min_views_per_class, 1)
    big = torch.iinfo(torch.long).max
    t_and_k = torch.stack([present.sum(), torch.where(present, counts, big).min()]).tolist()  # the one sync
    t, k = int(t_and_k[0]), int(t_and_k[1])
    if t == 0:
        empty = torch.empty(0, dtype=torch.long, device=device)
        return empty, empty
    v = min(k, max_views_per_class)
    if v * t > max_anchors:
        v = max_anchors // t
    if v == 0:  # more pairs than max_anchors: nothing can be sampled fairly
        empty = torch.empty(0, dtype=torch.long, device=device)
        return empty, empty

    # A uniformly random order inside every pair: shuffle all pixels, then stable-sort by pair key.
    noise = torch.rand(flat.shape, generator=generator, device=device)
    perm = torch.argsort(noise)
    perm = perm[torch.argsort(key[perm], stable=True)]  # (B*h*w,) pixels grouped by key, random within a group
    starts = torch.cumsum(counts, 0) - counts  # (B*n_values + 1,) first position of each key in the sorted order
    pair_keys = torch.argsort((~present).to(torch.uint8), stable=True)[:t]  # (T,) present keys, ascending
    offsets = starts[pair_keys][:, None] + torch.arange(v, device=device)[None, :]  # (T, V)
    index = perm[offsets.reshape(-1)]  # (T, V) -> (T*V,) flat pixel indices
    anchor_labels = (pair_keys % n_values).repeat_interleave(v)  # (T*V,)
    return index, anchor_labels


def sample_balanced_anchors(
    embeddings_s: Tensor,
    labels_s: Tensor,
    *,
    ignore_index: int = 255,
    min_views_per_class: int = 5,
    max_views_per_class: int = 2500,
    max_anchors: int = 10000,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Balanced anchors of one scale: ``V`` random pixels from every present (image, class) pair.

    Args:
        embeddings_s: ``(B, D, h, w)`` embeddings of one scale.
        labels_s: ``(B, h, w)`` labels at that resolution.
        ignore_index: label never sampled.
        min_views_per_class: minimum pixels for a pair to be present (5).
        max_views_per_class: cap on ``V`` (2500).
        max_anchors: cap on ``V * T`` (10000).
        generator: random source on the labels' device.

    Returns:
        ``anchors`` ``(N, D)`` (not normalised) and ``anchor_labels`` ``(N,)``, ``N = V * T``.
    """
    if embeddings_s.shape[0] != labels_s.shape[0] or embeddings_s.shape[-2:] != labels_s.shape[-2:]:
        raise ValueError(f"embeddings {tuple(embeddings_s.shape)} and labels {tuple(labels_s.shape)} disagree")
    index, anchor_labels = sample_anchor_indices(
        labels_s, ignore_index=ignore_index, min_views_per_class=min_views_per_class,
        max_views_per_class=max_views_per_class, max_anchors=max_anchors, generator=generator,
    )
    return gather_pixels(embeddings_s, index), anchor_labels


def gather_pixels(embeddings: Tensor, index: Tensor) -> Tensor:
    """Rows ``embeddings[b, :, y, x]`` for flat pixel indices ``index`` into ``(B, h, w)``: ``(N, D)``.

    Reads only the selected pixels (no channels-last copy of the whole map).
    """
    b, d, h, w = embeddings.shape
    flat = embeddings.reshape(b, d, h * w)  # (B, D, h, w) -> (B, D, h*w), a view for contiguous maps
    return flat[index // (h * w), :, index % (h * w)]  # advanced indices first: (N, D)
