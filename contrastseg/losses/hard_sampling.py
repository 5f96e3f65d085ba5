"""Hard-anchor sampling of pixel contrast [36] (Wang et al., ICCV 2021, Sec. 3.4), vectorised.

Per image, every class with more than ``max_views`` labelled pixels is a *pair*; with ``T`` pairs in the batch each
gives ``n = min(max_samples // T, max_views)`` anchors: half *hard* pixels (labelled ``c`` but predicted otherwise)
and half *easy* ones (predicted ``c``), drawn uniformly; a pair short of one kind fills up with the other. Like
:mod:`contrastseg.losses.sampling` it never loops over images or classes: a random permutation, then a stable sort
by ``(class, image, easy)``, puts the pixels of every pair and kind in a random order, and ranks within the runs
select the first ``n_hard`` / ``n_easy`` of each. One host synchronisation reads ``T``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from contrastseg.losses.checks import check_integer_labels

__all__ = ["run_ranks", "sample_hard_anchor_indices"]


def run_ranks(sorted_keys: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """For sorted keys: the rank of every entry within its run of equal keys, each entry's run, the run sizes."""
    _, run, sizes = torch.unique_consecutive(sorted_keys, return_inverse=True, return_counts=True)
    starts = torch.cumsum(sizes, 0) - sizes  # (R,)
    return torch.arange(sorted_keys.numel(), device=sorted_keys.device) - starts[run], run, sizes


def sample_hard_anchor_indices(
    labels: Tensor,
    predictions: Tensor,
    *,
    ignore_index: int = 255,
    max_samples: int = 1024,
    max_views: int = 100,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Flat pixel indices of [36]'s hard/easy anchors and their classes.

    Args:
        labels: ``(B, h, w)`` integer labels at the embeddings' resolution.
        predictions: ``(B, h, w)`` predicted classes at the same resolution (``logits.argmax(1)``, resized).
        ignore_index: label never sampled; negative labels are never sampled either.
        max_samples: anchors of the whole batch at most (1024 in [36]).
        max_views: a class needs more than this many pixels in an image to be sampled, and gives at most this
            many anchors per image (100 in [36]).
        generator: random source on ``labels.device``.

    Returns:
        ``index`` ``(N,)`` into ``labels.flatten()`` and ``anchor_labels`` ``(N,)`` (int64), pairs in (class, image)
        order with the hard anchors of a pair first; ``N = n * T``, ``0`` when no class has enough pixels or
        ``T > max_samples``.

    Raises:
        ValueError: shapes that differ or are not ``(B, h, w)``, or caps that are not positive integers.
    """
    check_integer_labels(labels)
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions must have the labels' shape {tuple(labels.shape)}, got "
                         f"{tuple(predictions.shape)}")
    for name, value in (("max_samples", max_samples), ("max_views", max_views)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    b = labels.shape[0]
    flat = labels.reshape(-1)  # (B, h, w) -> (B*h*w,)
    pixel = torch.nonzero((flat != ignore_index) & (flat >= 0)).squeeze(1)  # (P,) labelled pixels
    empty = (pixel[:0], flat[:0].long())
    if pixel.numel() == 0:
        return empty
    y = flat[pixel].long()
    easy = (predictions.reshape(-1)[pixel] == flat[pixel]).long()  # (P,) 0 = hard, 1 = easy
    image = pixel // labels[0].numel()
    device = generator.device if generator is not None else pixel.device
    # a random order within every run of the stable sort below
    perm = torch.randperm(pixel.numel(), generator=generator, device=device).to(pixel.device)
    pair_key = (y * b + image)[perm]  # (P,) class-major: pairs come out in (class, image) order
    kind_key = pair_key * 2 + easy[perm]  # hard (0) before easy (1) within a pair
    order = torch.sort(kind_key, stable=True).indices
    pixel, y, pair_key, kind_key = pixel[perm][order], y[perm][order], pair_key[order], kind_key[order]
    is_easy = (kind_key % 2).bool()
    rank, _, _ = run_ranks(kind_key)  # (P,) rank within its (pair, kind) run
    _, pair, pair_size = run_ranks(pair_key)  # (P,) its pair; (R,) pixels per pair
    n_easy = torch.zeros_like(pair_size).index_add_(0, pair, is_easy.long())  # (R,)
    n_hard = pair_size - n_easy
    eligible = pair_size > max_views  # (R,)
    t = int(eligible.sum())  # the one host sync: n depends on T
    n = min(max_samples // t, max_views) if t else 0
    if n == 0:
        return empty
    # [36]'s rule: n // 2 hard and the rest easy when both kinds have n / 2; otherwise all of the short kind and
    # the rest from the other (which has enough: a pair has more than max_views >= n pixels).
    both = (2 * n_hard >= n) & (2 * n_easy >= n)
    keep_hard = torch.where(both, torch.full_like(n_hard, n // 2),
                            torch.where(2 * n_hard >= n, n - n_easy, n_hard))  # (R,)
    keep_easy = n - keep_hard
    chosen = eligible[pair] & (rank < torch.where(is_easy, keep_easy[pair], keep_hard[pair]))  # (P,)
    return pixel[chosen], y[chosen]
