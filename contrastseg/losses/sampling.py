"""Balanced anchor sampling (paper Sec. 3.3), vectorised over images and classes.

Every (image, class) pair of the batch with at least ``min_views_per_class`` labelled pixels is *present*; ``K``
is the smallest pixel count of a present pair; ``V = min(K, max_views_per_class)``, reduced to
``max_anchors // T`` when ``V * T`` would exceed ``max_anchors`` (``T`` present pairs); each present pair gives
``V`` pixels drawn uniformly without replacement. Ignore pixels are never drawn.

The implementation never loops over images, classes or pairs: pair sizes come from one ``scatter_add`` over a
fixed-size table, a random permutation inside every pair comes from two sorts, and the ``V`` first pixels of every
pair are read at computed offsets. One host synchronisation reads ``(T, V)``, which the output size needs; the
multi-scale loss samples all its scales in one call, so one sync and one pair of sorts serve every scale, and in
training it queues the draw before the model's forward pass and reads ``(T, V)`` after it
(:func:`draw_anchor_indices_multiscale`), so that the sync does not drain the device's queue.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from contrastseg.losses.gather import gather_pixels

__all__ = ["PendingAnchors", "draw_anchor_indices_multiscale", "gather_pixels", "sample_anchor_indices",
           "sample_anchor_indices_multiscale", "sample_balanced_anchors"]


def sample_anchor_indices(
    labels: Tensor,
    *,
    ignore_index: int = 255,
    min_views_per_class: int = 5,
    max_views_per_class: int = 2500,
    max_anchors: int = 10000,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Flat pixel indices of the balanced anchor set, grouped by (class, image) pair.

    Args:
        labels: ``(B, h, w)`` integer labels at the embeddings' resolution; values outside
            ``0 .. max(255, ignore_index)`` are never sampled, like ``ignore_index``.
        ignore_index: label never sampled.
        min_views_per_class: pairs with fewer labelled pixels are not sampled.
        max_views_per_class: cap on ``V``.
        max_anchors: cap on ``V * T``.
        generator: random source (on ``labels.device``) for reproducible draws.

    Returns:
        ``index`` ``(N,)`` into ``labels.flatten()`` and ``anchor_labels`` ``(N,)``, with ``N = V * T``; pairs
        appear in (class, image) order, each as ``V`` consecutive entries, so every class is one contiguous run
        (the fused InfoNCE kernels then find an anchor's positives in a few column tiles). ``N = 0`` when no pair
        is present.
    """
    return sample_anchor_indices_multiscale(
        [labels], ignore_index=ignore_index, min_views_per_class=min_views_per_class,
        max_views_per_class=max_views_per_class, max_anchors=max_anchors, generator=generator)[0]


def sample_anchor_indices_multiscale(labels: Sequence[Tensor], **options: Any) -> list[tuple[Tensor, Tensor]]:
    """:func:`sample_anchor_indices` for several scales at once: one host sync and two sorts for all of them.

    Each scale is sampled exactly as if alone (its own ``T``, ``K`` and ``V``; caps per scale); only the
    random stream differs from separate calls. The same as ``draw_anchor_indices_multiscale(...).resolve()``
    (see there for drawing without waiting for the device).

    Args:
        labels: one ``(B, h_s, w_s)`` label map per scale (same ``B``).
        **options: ``ignore_index``, ``min_views_per_class``, ``max_views_per_class``, ``max_anchors``,
            ``generator``, as in :func:`sample_anchor_indices`.

    Returns:
        Per scale, ``index`` into that scale's ``labels[s].flatten()`` and ``anchor_labels``.
    """
    return draw_anchor_indices_multiscale(labels, **options).resolve()


class PendingAnchors:
    """A balanced draw whose device work is queued and whose size is on its way to the host.

    Made by :func:`draw_anchor_indices_multiscale`; :meth:`resolve` finishes it.
    """

    def __init__(self, *, host: Tensor, ready: torch.cuda.Event | None, batch: int, n_keys: int, local: Tensor,
                 starts: Tensor, v_dev: Tensor, perm: Tensor, pair_order: Tensor) -> None:
        self._host, self._ready, self._batch, self._n_keys = host, ready, batch, n_keys
        self._local, self._starts, self._v_dev, self._perm, self._pair_order = local, starts, v_dev, perm, pair_order
        self._result: list[tuple[Tensor, Tensor]] | None = None

    def resolve(self) -> list[tuple[Tensor, Tensor]]:
        """Per scale, ``index`` and ``anchor_labels`` (as :func:`sample_anchor_indices_multiscale`).

        Reads ``T`` and ``V`` of every scale, which waits for the device only if it has not yet run the sampler's
        kernels (they were queued before anything that came after the draw), then queues the indexing.
        """
        if self._result is not None:
            return self._result
        if self._ready is not None:
            self._ready.synchronize()  # the copy of (T, V) has landed in pinned host memory
        host = self._host.tolist()
        n_scales = len(host) // 2
        pairs_per_scale, views = host[:n_scales], host[n_scales:]
        counts_out = [t_s * v for t_s, v in zip(pairs_per_scale, views)]
        n_out, n_pairs = sum(counts_out), sum(pairs_per_scale)
        device = self._local.device
        if n_out == 0:
            empty = torch.empty(0, dtype=torch.long, device=device)
            self._result = [(empty, empty) for _ in range(n_scales)]
            return self._result
        pair_keys = self._pair_order[:n_pairs]  # (T,) present keys, ascending
        pair_views = self._v_dev[pair_keys // self._n_keys]  # (T,) V of each pair's scale
        first = torch.repeat_interleave(self._starts[pair_keys], pair_views, output_size=n_out)  # (N,)
        pair_first = torch.cumsum(pair_views, 0) - pair_views  # (T,) first output slot of each pair
        rank = torch.arange(n_out, device=device) - torch.repeat_interleave(pair_first, pair_views, output_size=n_out)
        index = self._local[self._perm[first + rank]]  # (N,) pixel inside its scale's map
        classes = pair_keys % self._n_keys // self._batch  # (T,)
        anchor_labels = torch.repeat_interleave(classes, pair_views, output_size=n_out)  # (N,)
        self._result = list(zip(index.split(counts_out), anchor_labels.split(counts_out)))
        self._local = self._starts = self._perm = self._pair_order = None  # per-pixel buffers, no longer needed
        return self._result


def draw_anchor_indices_multiscale(
    labels: Sequence[Tensor],
    *,
    ignore_index: int = 255,
    min_views_per_class: int = 5,
    max_views_per_class: int = 2500,
    max_anchors: int = 10000,
    generator: torch.Generator | None = None,
) -> PendingAnchors:
    """Queue the balanced draw of every scale without waiting for the device; ``.resolve()`` gives the anchors.

    Everything that does not depend on the anchor count is queued here (pair sizes, ``T`` and ``V``, the random
    order inside every pair), and ``T`` and ``V`` start their copy to pinned host memory. Called before a model's
    forward pass and resolved after it was queued, the one host synchronisation of the sampler then waits only for
    the device to reach the sampler's kernels, while the forward pass is already waiting in the queue behind them.

    Args:
        labels: one ``(B, h_s, w_s)`` label map per scale (same ``B``).
        ignore_index, min_views_per_class, max_views_per_class, max_anchors, generator: as in
            :func:`sample_anchor_indices`.

    Returns:
        The queued draw; its ``resolve()`` gives, per scale, ``index`` into ``labels[s].flatten()`` and
        ``anchor_labels``.
    """
    device = labels[0].device
    n_values = max(256, ignore_index + 1)
    batch = labels[0].shape[0]
    n_keys = n_values * batch + 1  # per scale: (class, image) pairs, class-major, then one bucket for invalid pixels
    keys, locals_ = [], []
    for s, lab in enumerate(labels):  # a loop over the (few) scales only; Python numbers, no host-device copies
        flat = lab.reshape(-1).long()  # (B, h, w) -> (B*h*w,)
        local = torch.arange(flat.numel(), device=device)  # (B*h*w,) index inside this scale's map
        valid = (flat != ignore_index) & (flat >= 0) & (flat < n_values)  # others would spill into another key
        pair = torch.where(valid, flat * batch + local // (lab.shape[1] * lab.shape[2]), n_keys - 1)
        keys.append(pair.add_(s * n_keys))  # (B*h*w,) global key: scale, then (class, image) or invalid
        locals_.append(local)
    key, local = torch.cat(keys), torch.cat(locals_)  # (P,) all scales' pixels, scale-major
    n_scales = len(labels)
    counts = torch.zeros(n_scales * n_keys, dtype=torch.long, device=device)
    counts.scatter_add_(0, key, torch.ones_like(key))  # (S*n_keys,) pixels per key
    starts = torch.cumsum(counts, 0) - counts  # (S*n_keys,) first position of each key in key order
    counts.view(n_scales, n_keys)[:, -1] = 0  # the invalid buckets are never sampled
    present = counts >= max(min_views_per_class, 1)  # (S*n_keys,)
    per_scale = present.view(n_scales, n_keys)
    t = per_scale.sum(1)  # (S,) present pairs per scale
    k = torch.where(per_scale, counts.view(n_scales, n_keys), torch.iinfo(torch.long).max).amin(1)  # (S,)
    # V per scale, computed on the device so that it is there for the indexing (0: nothing sampled fairly).
    v_dev = torch.clamp_max(k, max_views_per_class)
    v_dev = torch.where(v_dev * t > max_anchors, max_anchors // t.clamp_min(1), v_dev).mul_(t > 0)  # (S,)
    sizes = torch.cat([t, v_dev])  # (2S,) T_s and V_s of every scale: the numbers the host needs
    ready = None
    if sizes.is_cuda:  # start the copy now, into pinned memory (non_blocking), and mark when it has landed
        host = torch.empty(sizes.shape, dtype=sizes.dtype, pin_memory=True)  # pinned: the copy does not block
        sizes = host.copy_(sizes, non_blocking=True)
        ready = torch.cuda.Event()
        ready.record()
    # A uniformly random order inside every key: shuffle all pixels, then stable-sort by key.
    noise = torch.rand(key.shape, generator=generator, device=device)
    perm = torch.argsort(noise)
    perm = perm[torch.argsort(key[perm], stable=True)]  # (P,) pixels grouped by key, random within a key
    pair_order = torch.argsort((~present).to(torch.uint8), stable=True)  # (S*n_keys,) present keys first, ascending
    return PendingAnchors(host=sizes, ready=ready, batch=batch, n_keys=n_keys, local=local, starts=starts,
                          v_dev=v_dev, perm=perm, pair_order=pair_order)


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

