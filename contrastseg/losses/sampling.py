"""Balanced anchor sampling (paper Sec. 3.3), vectorised over images and classes.

Every (image, class) pair of the batch with at least ``min_views_per_class`` labelled pixels is *present*; ``K``
is the smallest pixel count of a present pair; ``V = min(K, max_views_per_class)``, reduced to
``max_anchors // T`` when ``V * T`` would exceed ``max_anchors`` (``T`` present pairs); each present pair gives
``V`` pixels drawn uniformly without replacement. Any non-negative class id is a class (not only ids below 256);
ignore pixels and negative labels are never drawn.

The implementation never loops over images, classes or pairs: every pixel gets a key ``(scale, class, image)``, a
random permutation followed by a stable sort by key groups the pixels of every pair in a random order, the runs of
equal keys are the pairs (their sizes and first positions come from tables with one entry per pixel, so class ids
need no table of their own), and the ``V`` first pixels of every present pair are read at computed offsets. One
host synchronisation reads ``(T, V)``, which the output size needs; the multi-scale loss samples all its scales in
one call, so one sync and one pair of sorts serve every scale, and in training it queues the draw before the model's
forward pass and reads ``(T, V)`` after it (``draw_anchor_indices_multiscale``), so that the sync does not drain
the device's queue. When ``max_anchors`` is below ``T`` (``V = 0``: no anchors, a zero loss) an
:class:`AnchorBudgetWarning` says so, once per process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from contrastseg.losses.checks import (
    AnchorBudgetWarning,
    check_integer_labels,
    check_sampling_options,
    warn_anchor_budget,
)
from contrastseg.losses.gather import gather_pixels

__all__ = ["AnchorBudgetWarning", "PendingAnchors", "draw_anchor_indices_multiscale", "gather_pixels",
           "sample_anchor_indices", "sample_anchor_indices_multiscale", "sample_balanced_anchors"]

_COUNT_BITS = 40  # run sizes (< 2**40 pixels) in the low bits of the per-scale minimum's packed values


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
        labels: ``(B, h, w)`` integer labels at the embeddings' resolution. Every non-negative id is a class (up to
            ``2**59 // B`` with up to 15 scales in one call; larger ids are never sampled); negative ids and
            ``ignore_index`` are never sampled.
        ignore_index: label never sampled (any integer: 255, 65535 for 16-bit label images, -1).
        min_views_per_class: pairs with fewer labelled pixels are not sampled (a positive integer).
        max_views_per_class: cap on ``V`` (a positive integer).
        max_anchors: cap on ``V * T`` (a positive integer); below ``T`` nothing is drawn, and an
            :class:`AnchorBudgetWarning` says so once per process.
        generator: random source (on ``labels.device``) for reproducible draws.

    Returns:
        ``index`` ``(N,)`` into ``labels.flatten()`` and ``anchor_labels`` ``(N,)`` (int64), with ``N = V * T``;
        pairs appear in (class, image) order, each as ``V`` consecutive entries, so every class is one contiguous
        run (the fused InfoNCE kernels then find an anchor's positives in a few column tiles). ``N = 0`` when no
        pair is present.

    Raises:
        ValueError: ``labels`` is not ``(B, h, w)`` integer, or a count is not a positive integer.
    """
    check_integer_labels(labels)
    return sample_anchor_indices_multiscale(
        [labels], ignore_index=ignore_index, min_views_per_class=min_views_per_class,
        max_views_per_class=max_views_per_class, max_anchors=max_anchors, generator=generator)[0]


def sample_anchor_indices_multiscale(labels: Sequence[Tensor], **options: Any) -> list[tuple[Tensor, Tensor]]:
    """:func:`sample_anchor_indices` for several scales at once: one host sync and two sorts for all of them.

    Each scale is sampled exactly as if alone (its own ``T``, ``K`` and ``V``; caps per scale); only the
    random stream differs from separate calls. The same as ``draw_anchor_indices_multiscale(...).resolve()``
    (see there for drawing without waiting for the device).

    Args:
        labels: one ``(B, h_s, w_s)`` integer label map per scale (same ``B``).
        **options: ``ignore_index``, ``min_views_per_class``, ``max_views_per_class``, ``max_anchors``,
            ``generator``, ``scale_names``, as in ``draw_anchor_indices_multiscale``.

    Returns:
        Per scale, ``index`` into that scale's ``labels[s].flatten()`` and ``anchor_labels``.
    """
    return draw_anchor_indices_multiscale(labels, **options).resolve()


class PendingAnchors:
    """A balanced draw whose device work is queued and whose size is on its way to the host.

    Made by ``draw_anchor_indices_multiscale``; :meth:`resolve` finishes it.
    """

    def __init__(self, *, host: Tensor, ready: torch.cuda.Event | None, batch: int, shift: int, local: Tensor,
                 starts: Tensor, run_key: Tensor, v_dev: Tensor, perm: Tensor, pair_order: Tensor,
                 max_anchors: int, scale_names: Sequence[str]) -> None:
        self._host, self._ready, self._batch, self._shift = host, ready, batch, shift
        self._local, self._starts, self._run_key, self._v_dev = local, starts, run_key, v_dev
        self._perm, self._pair_order = perm, pair_order
        self._max_anchors, self._scale_names = max_anchors, list(scale_names)
        self._result: list[tuple[Tensor, Tensor]] | None = None

    def resolve(self) -> list[tuple[Tensor, Tensor]]:
        """Per scale, ``index`` and ``anchor_labels`` (as :func:`sample_anchor_indices_multiscale`).

        Reads ``T`` and ``V`` of every scale, which waits for the device only if it has not yet run the sampler's
        kernels (they were queued before anything that came after the draw), then queues the indexing. Warns
        (:class:`AnchorBudgetWarning`, once per process) when a scale has pairs but ``V = 0``.
        """
        if self._result is not None:
            return self._result
        if self._ready is not None:
            self._ready.synchronize()  # the copy of (T, V) has landed in pinned host memory
        host = self._host.tolist()
        n_scales = len(host) // 2
        pairs_per_scale, views = host[:n_scales], host[n_scales:]
        starved = [(name, t) for name, t, v in zip(self._scale_names, pairs_per_scale, views) if t > 0 and v == 0]
        if starved:  # read from the (T, V) already on the host: no further synchronisation
            warn_anchor_budget(starved, self._max_anchors)
        counts_out = [t_s * v for t_s, v in zip(pairs_per_scale, views)]
        n_out, n_pairs = sum(counts_out), sum(pairs_per_scale)
        device = self._local.device
        if n_out == 0:
            empty = torch.empty(0, dtype=torch.long, device=device)
            self._result = [(empty, empty) for _ in range(n_scales)]
            return self._result
        runs = self._pair_order[:n_pairs]  # (T,) the present runs, in key order: scale, class, image
        pair_key = self._run_key[runs]  # (T,)
        pair_views = self._v_dev[pair_key >> self._shift]  # (T,) V of each pair's scale
        first = torch.repeat_interleave(self._starts[runs], pair_views, output_size=n_out)  # (N,)
        pair_first = torch.cumsum(pair_views, 0) - pair_views  # (T,) first output slot of each pair
        rank = torch.arange(n_out, device=device) - torch.repeat_interleave(pair_first, pair_views, output_size=n_out)
        index = self._local[self._perm[first + rank]]  # (N,) pixel inside its scale's map
        classes = (pair_key & ((1 << self._shift) - 1)) // self._batch  # (T,)
        anchor_labels = torch.repeat_interleave(classes, pair_views, output_size=n_out)  # (N,)
        self._result = list(zip(index.split(counts_out), anchor_labels.split(counts_out)))
        self._local = self._starts = self._run_key = self._perm = self._pair_order = None  # per-pixel buffers
        return self._result


def draw_anchor_indices_multiscale(
    labels: Sequence[Tensor],
    *,
    ignore_index: int = 255,
    min_views_per_class: int = 5,
    max_views_per_class: int = 2500,
    max_anchors: int = 10000,
    generator: torch.Generator | None = None,
    scale_names: Sequence[str] | None = None,
) -> PendingAnchors:
    """Queue the balanced draw of every scale without waiting for the device; ``.resolve()`` gives the anchors.

    Everything that does not depend on the anchor count is queued here (pair sizes, ``T`` and ``V``, the random
    order inside every pair), and ``T`` and ``V`` start their copy to pinned host memory. Called before a model's
    forward pass and resolved after it was queued, the one host synchronisation of the sampler then waits only for
    the device to reach the sampler's kernels, while the forward pass is already waiting in the queue behind them.

    Args:
        labels: one ``(B, h_s, w_s)`` integer label map per scale (same ``B``).
        ignore_index, min_views_per_class, max_views_per_class, max_anchors, generator: as in
            :func:`sample_anchor_indices`.
        scale_names: how an :class:`AnchorBudgetWarning` names each scale (``None``: ``"scale <i>"``).

    Returns:
        The queued draw; its ``resolve()`` gives, per scale, ``index`` into ``labels[s].flatten()`` and
        ``anchor_labels``.

    Raises:
        ValueError: a label map is not ``(B, h, w)`` integer, the maps' batches differ, or a count is not a
            positive integer.
    """
    check_sampling_options(ignore_index=ignore_index, min_views_per_class=min_views_per_class,
                           max_views_per_class=max_views_per_class, max_anchors=max_anchors)
    if not labels:
        raise ValueError("labels: give at least one (B, h, w) label map")
    for s, lab in enumerate(labels):
        check_integer_labels(lab, f"labels[{s}]")
        if lab.shape[0] != labels[0].shape[0]:
            raise ValueError(f"labels[{s}] {tuple(lab.shape)} has batch {lab.shape[0]} but labels[0] "
                             f"{tuple(labels[0].shape)} {labels[0].shape[0]}: every scale's map needs the same B")
    device = labels[0].device
    n_scales, batch = len(labels), labels[0].shape[0]
    # key = scale * 2**shift + class * batch + image: ascending keys are scale-major, then (class, image), the order
    # of the output; the scale is key >> shift. n_classes, the class ids that fit in the int64 key, is 2**56 for 4
    # scales of 16 images; pixels that are never drawn (ignore, negative or larger ids) get the one key `invalid`,
    # above all others.
    shift = 63 - n_scales.bit_length()
    n_classes = 2**shift // max(batch, 1)
    invalid = n_scales << shift
    keys, locals_ = [], []
    for s, lab in enumerate(labels):  # a loop over the (few) scales only; Python numbers, no host-device copies
        flat = lab.reshape(-1).long()  # (B, h, w) -> (B*h*w,)
        local = torch.arange(flat.numel(), device=device)  # (B*h*w,) index inside this scale's map
        valid = (flat != ignore_index) & (flat >= 0) & (flat < n_classes)
        key = (flat * batch).add_(local // max(lab.shape[1] * lab.shape[2], 1)).add_(s << shift)  # (B*h*w,)
        keys.append(key.masked_fill_(~valid, invalid))  # wrapped keys of larger ids are replaced here
        locals_.append(local)
    key, local = torch.cat(keys), torch.cat(locals_)  # (P,) all scales' pixels, scale-major
    n_pixels = key.numel()
    # A uniformly random order inside every key: shuffle all pixels, then stable-sort by key.
    noise = torch.rand(key.shape, generator=generator, device=device)
    perm = torch.argsort(noise)
    sorted_key, order = torch.sort(key[perm], stable=True)  # (P,) ascending, random order within every key
    perm = perm[order]  # (P,) pixels grouped by key
    # Runs of equal sorted keys are the (scale, class, image) pairs, in key order. There are at most P of them, so
    # tables of P entries hold them whatever the class ids are (index 1 + r for run r; index 0 takes the writes of
    # the pixels that start no run).
    position = torch.arange(n_pixels, device=device)  # (P,)
    is_start = torch.empty(n_pixels, dtype=torch.bool, device=device)
    is_start[:1] = True
    torch.ne(sorted_key[1:], sorted_key[:-1], out=is_start[1:])  # (P,) the first pixel of every run
    slot = torch.cumsum(is_start, 0).masked_fill_(~is_start, 0)  # (P,) 1 + run at a run's first pixel, else 0
    first = torch.full((n_pixels + 2,), n_pixels, dtype=torch.long, device=device)
    first.scatter_(0, slot, position)  # (P+2,) [1 + r]: first position of run r
    starts = first[1:-1]  # (P,) first sorted position of every run (P past the last run)
    counts = first[2:] - starts  # (P,) pixels per run, 0 past the last run
    run_key = torch.full((n_pixels + 1,), invalid, dtype=torch.long, device=device)
    run_key = run_key.scatter_(0, slot, sorted_key)[1:]  # (P+1,) -> (P,) key of every run, ascending
    present = (counts >= min_views_per_class) & (run_key < invalid)  # (P,) present pairs
    below = torch.empty(n_pixels + 1, dtype=torch.long, device=device)
    below[:1] = 0
    torch.cumsum(present, 0, out=below[1:])  # (P+1,) [r]: present runs before run r
    # Runs are in scale order: scale s holds runs bound[s] .. bound[s+1] - 1.
    bound = torch.searchsorted(run_key, torch.arange(n_scales + 1, device=device) << shift)  # (S+1,)
    t = below[bound[1:]] - below[bound[:-1]]  # (S,) present pairs per scale
    # K_s in one scan: the running minimum of (S - scale) * 2**40 + size over present runs, read at the last run of
    # scale s, has the high part S - s (the smallest so far) and the smallest size of s whenever T_s > 0.
    packed = run_key >> shift  # (P,) scale of every run (S: invalid and unused runs)
    packed.neg_().add_(n_scales).mul_(2**_COUNT_BITS).add_(counts)  # (P,) (S - scale) * 2**40 + size
    packed.masked_fill_(~present, torch.iinfo(torch.long).max)
    running_min = torch.cummin(packed, 0).values  # (P,)
    k = (running_min[(bound[1:] - 1).clamp_min(0)] % 2**_COUNT_BITS) if n_pixels else t  # (S,) K, where T > 0
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
    # The present runs first, in key order: a present run r goes to slot below[r + 1] (1-based; the others to 0,
    # in place: `below` is not needed any more).
    pair_order = torch.empty(n_pixels + 1, dtype=torch.long, device=device)
    pair_order = pair_order.scatter_(0, below[1:].masked_fill_(~present, 0), position)[1:]  # (P,)
    names = [f"scale {s}" for s in range(n_scales)] if scale_names is None else scale_names
    return PendingAnchors(host=sizes, ready=ready, batch=batch, shift=shift, local=local, starts=starts,
                          run_key=run_key, v_dev=v_dev, perm=perm, pair_order=pair_order, max_anchors=max_anchors,
                          scale_names=names)


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
        labels_s: ``(B, h, w)`` integer labels at that resolution (any non-negative id is a class).
        ignore_index: label never sampled.
        min_views_per_class: minimum pixels for a pair to be present (5).
        max_views_per_class: cap on ``V`` (2500).
        max_anchors: cap on ``V * T`` (10000); below ``T`` nothing is drawn (see :func:`sample_anchor_indices`).
        generator: random source on the labels' device.

    Returns:
        ``anchors`` ``(N, D)`` (not normalised) and ``anchor_labels`` ``(N,)``, ``N = V * T``.

    Raises:
        ValueError: ``embeddings_s`` is not 4-D, ``labels_s`` not ``(B, h, w)`` integer, their batch or size
            disagree, or a count is not a positive integer.
    """
    if embeddings_s.dim() != 4:
        raise ValueError(f"embeddings_s must be (B, D, h, w), got shape {tuple(embeddings_s.shape)}")
    check_integer_labels(labels_s, "labels_s")
    if embeddings_s.shape[0] != labels_s.shape[0] or embeddings_s.shape[-2:] != labels_s.shape[-2:]:
        raise ValueError(f"embeddings {tuple(embeddings_s.shape)} and labels {tuple(labels_s.shape)} disagree")
    index, anchor_labels = sample_anchor_indices(
        labels_s, ignore_index=ignore_index, min_views_per_class=min_views_per_class,
        max_views_per_class=max_views_per_class, max_anchors=max_anchors, generator=generator,
    )
    return gather_pixels(embeddings_s, index), anchor_labels
