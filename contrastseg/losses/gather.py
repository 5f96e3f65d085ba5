"""Embedding rows of selected pixels, with a cheap backward for indices known to be distinct."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["gather_pixels"]


class _GatherPixels(torch.autograd.Function):
    """``embeddings[b, :, p]`` rows; the backward writes rows into zeros without the accumulating index_put.

    Autograd's own backward of advanced indexing accumulates (sorts the indices and copies the whole map
    contiguous first); with indices known to be distinct a plain scatter is exact and much cheaper.
    """

    @staticmethod
    def forward(ctx, flat: Tensor, image: Tensor, pixel: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(image, pixel)
        ctx.shape = flat.shape
        return flat[image, :, pixel]  # advanced indices first: (N, D)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        image, pixel = ctx.saved_tensors
        out = grad.new_zeros(ctx.shape)  # (B, D, h*w)
        out[image, :, pixel] = grad
        return out, None, None


def gather_pixels(embeddings: Tensor, index: Tensor, *, distinct: bool = False) -> Tensor:
    """Rows ``embeddings[b, :, y, x]`` for flat pixel indices ``index`` into ``(B, h, w)``: ``(N, D)``.

    Reads only the selected pixels (no channels-last copy of the whole map).

    Args:
        embeddings: ``(B, D, h, w)``.
        index: ``(N,)`` flat indices into ``(B, h, w)``.
        distinct: the indices are known to be distinct (a sample without replacement), which allows a cheaper
            backward.

    Returns:
        ``(N, D)`` rows in the embeddings' dtype, differentiable with respect to ``embeddings``.
    """
    b, d, h, w = embeddings.shape
    flat = embeddings.reshape(b, d, h * w)  # (B, D, h, w) -> (B, D, h*w), a view for contiguous maps
    image, pixel = index // (h * w), index % (h * w)
    if distinct and torch.is_grad_enabled() and flat.requires_grad:
        return _GatherPixels.apply(flat, image, pixel)
    return flat[image, :, pixel]  # advanced indices first: (N, D)
