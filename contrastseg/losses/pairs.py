"""Per (image, class) pair reductions of an embedding map: class-mean *region* embeddings and a few random pixels,
vectorised (one sort, no loop over images or classes). Pixel contrast [36] fills its memories with them, and
region contrast [15] contrasts the region embeddings themselves."""

from __future__ import annotations

import torch
from torch import Tensor

from contrastseg.losses.checks import check_integer_labels
from contrastseg.losses.hard_sampling import run_ranks

__all__ = ["region_embeddings", "sample_pixels_per_pair"]


def _labelled(labels: Tensor, ignore_index: int) -> tuple[Tensor, Tensor, Tensor]:
    """Flat indices of the labelled pixels, their classes, and their pair key ``image * C_max + class``."""
    check_integer_labels(labels)
    flat = labels.reshape(-1)  # (B, h, w) -> (B*h*w,)
    pixel = torch.nonzero((flat != ignore_index) & (flat >= 0)).squeeze(1)  # (P,)
    y = flat[pixel].long()
    span = int(y.max()) + 1 if y.numel() else 1  # one host sync: the key's class range
    image = pixel // labels[0].numel()
    return pixel, y, image * span + y  # keys sort image-major, classes ascending within an image


def region_embeddings(embeddings: Tensor, labels: Tensor, *, ignore_index: int = 255) -> tuple[Tensor, Tensor, Tensor]:
    """The mean embedding of every (image, class) pair with at least one labelled pixel.

    Args:
        embeddings: ``(B, D, h, w)``.
        labels: ``(B, h, w)`` integer labels at that resolution.
        ignore_index: label that belongs to no region (negative labels neither).

    Returns:
        ``means`` ``(R, D)`` (differentiable, in float32), their classes ``(R,)`` and images ``(R,)``, pairs in
        (image, class) order.
    """
    b, d, h, w = embeddings.shape
    if labels.shape != (b, h, w):
        raise ValueError(f"labels must be (B, h, w) = {(b, h, w)} for embeddings {tuple(embeddings.shape)}, got "
                         f"{tuple(labels.shape)}")
    pixel, y, key = _labelled(labels, ignore_index)
    if pixel.numel() == 0:
        return embeddings.new_zeros(0, d, dtype=torch.float32) + embeddings.sum() * 0, y, y
    keys, pair, sizes = torch.unique(key, return_inverse=True, return_counts=True)  # sorted keys: (R,)
    rows = embeddings.permute(0, 2, 3, 1).reshape(b * h * w, d)[pixel].float()  # (B, D, h, w) -> (P, D)
    sums = rows.new_zeros(keys.numel(), d).index_add(0, pair, rows)  # (R, D)
    classes = torch.zeros_like(keys).scatter_(0, pair, y)  # (R,) every pixel of a pair has its class
    images = torch.zeros_like(keys).scatter_(0, pair, pixel // (h * w))
    return sums / sizes[:, None], classes, images


def sample_pixels_per_pair(labels: Tensor, per_pair: int, *, ignore_index: int = 255,
                           generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Up to ``per_pair`` random labelled pixels of every (image, class) pair (all of a smaller pair).

    Args:
        labels: ``(B, h, w)`` integer labels.
        per_pair: pixels per pair (10 in [36]'s memory update).
        ignore_index: label never drawn (negative labels neither).
        generator: random source on ``labels.device``.

    Returns:
        Flat ``index`` ``(N,)`` into ``labels.flatten()`` and the classes ``(N,)``, pairs in (image, class) order.
    """
    if not isinstance(per_pair, int) or isinstance(per_pair, bool) or per_pair < 1:
        raise ValueError(f"per_pair must be a positive integer, got {per_pair!r}")
    pixel, y, key = _labelled(labels, ignore_index)
    if pixel.numel() == 0:
        return pixel, y
    device = generator.device if generator is not None else pixel.device
    perm = torch.randperm(pixel.numel(), generator=generator, device=device).to(pixel.device)
    order = torch.sort(key[perm], stable=True).indices  # pairs in key order, random order within a pair
    chosen = perm[order]
    rank, _, _ = run_ranks(key[chosen])  # (P,) rank within its pair
    chosen = chosen[rank < per_pair]
    return pixel[chosen], y[chosen]
