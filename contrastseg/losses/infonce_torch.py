"""The blockwise PyTorch path of the supervised InfoNCE (Eq. 1-2), on any device, and the pieces both paths use.

:func:`blockwise_infonce` processes row blocks of the ``N x M`` similarities forward and recomputes them backward
with the closed-form gradient given in :mod:`contrastseg.losses.infonce`, so memory is ``O(block x M)``.
:func:`l2_normalize` and :func:`check_first_order` serve the fused Triton path too
(:mod:`contrastseg.losses.infonce_triton`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["BLOCK_ELEMENTS", "blockwise_infonce", "check_first_order", "l2_normalize"]

BLOCK_ELEMENTS = 1 << 23  # similarity entries per row block (32 MiB of float32 per temporary)
# Every line below is a kernel launch on a GPU, and at the paper's anchor counts (a few thousand) launches, not
# arithmetic, bound the loss's time: the functions here are written for few launches (in-place updates, masks
# applied with masked_fill_, the temperature folded into one operand, one block when it fits).


class _L2Normalize(torch.autograd.Function):
    """``x / max(|x|, eps)`` per row with a closed-form backward (3 kernels forward, 5 backward)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, eps: float) -> Tensor:  # type: ignore[override]
        norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)  # (N, 1)
        z = x / norm.clamp_min(eps)
        ctx.save_for_backward(z, norm)
        ctx.eps = eps
        return z

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        z, norm = ctx.saved_tensors
        # |x| > eps: (g - z (z.g)) / |x|; below eps the map is x / eps, so the gradient is g / eps.
        inner = (z * grad).sum(dim=1, keepdim=True).mul_(norm > ctx.eps)  # (N, 1)
        return (grad - z * inner).div_(norm.clamp_min(ctx.eps)), None


def l2_normalize(x: Tensor, eps: float = 1e-12) -> Tensor:
    """Rows of ``x`` scaled to unit L2 norm, in float32 (``F.normalize(x.float(), dim=1)``, fewer kernels).

    Args:
        x: ``(N, D)`` rows, any float dtype.
        eps: lower bound of the norm (rows shorter than it are divided by ``eps``).

    Returns:
        ``(N, D)`` float32 unit rows; the backward pass is closed-form.
    """
    return _L2Normalize.apply(x.float(), eps)


def check_first_order() -> None:
    """Raise inside a closed-form backward run with ``create_graph=True``: its result would carry no second
    derivative, so a Hessian-vector product would silently miss the InfoNCE curvature."""
    if torch.is_grad_enabled():
        raise RuntimeError("supervised_infonce has a closed-form first-order backward: second derivatives "
                           "(create_graph=True) are not supported")


def _cat(parts: list[Tensor]) -> Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts)  # no copy when everything fit in one block


class _BlockwiseInfoNCE(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, z_rows: Tensor, y_rows: Tensor, z_cols: Tensor, y_cols: Tensor, inv_t: float, exclude_self: bool,
        block: int,
    ) -> Tensor:
        n = z_rows.shape[0]
        scaled = z_rows * inv_t  # (N, D): s = scaled @ z_cols.T
        lse_parts, row_parts, inv_npos_parts = [], [], []
        for r0 in range(0, n, block):
            r1 = min(r0 + block, n)
            s = scaled[r0:r1] @ z_cols.T  # (b, D) x (D, M) -> (b, M)
            same = y_rows[r0:r1, None] == y_cols[None, :]  # (b, M) same class: positives, or the anchor itself
            s_neg = s.masked_fill(same, float("-inf"))  # (b, M)
            lse_b = torch.logsumexp(s_neg, dim=1)  # (b,) over N(i), -inf if empty
            # softplus(lse - s), zero off the positives; masked_fill_ with ~same, not a multiplication by it (which
            # would first convert the mask to float, one more pass over b x M).
            per_pair = F.softplus(torch.sub(lse_b[:, None], s, out=s_neg)).masked_fill_(~same, 0.0)  # (b, M)
            npos_b = same.sum(dim=1, dtype=torch.float32)  # (b,)
            if exclude_self:  # the anchor itself is not its own positive
                per_pair[:, r0:r1].diagonal().zero_()
                npos_b = npos_b.sub_(1.0)
            inv_npos_b = npos_b.clamp_min_(1.0).reciprocal_()  # (b,) 1/|P(i)| (rows without positives add 0)
            lse_parts.append(lse_b)
            row_parts.append(per_pair.sum(dim=1).mul_(inv_npos_b))
            inv_npos_parts.append(inv_npos_b)
        lse, inv_npos = _cat(lse_parts), _cat(inv_npos_parts)  # (N,) each
        ctx.save_for_backward(scaled, y_rows, z_cols, y_cols, lse, inv_npos)
        ctx.inv_t, ctx.exclude_self, ctx.block = inv_t, exclude_self, block
        return _cat(row_parts).sum() / n

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        check_first_order()
        scaled, y_rows, z_cols, y_cols, lse, inv_npos = ctx.saved_tensors
        block = ctx.block
        n = scaled.shape[0]
        weight = inv_npos * (grad_out.float() / n)  # (N,) d total / d per-pair term of row i
        need_cols = ctx.exclude_self or ctx.needs_input_grad[2]  # one set: its gradient includes the columns' part
        grad_rows_parts, grad_cols = [], None
        for r0 in range(0, n, block):
            r1 = min(r0 + block, n)
            s = scaled[r0:r1] @ z_cols.T  # (b, M), recomputed
            same = y_rows[r0:r1, None] == y_cols[None, :]  # (b, M)
            g_pos = torch.sub(lse[r0:r1, None], s).sigmoid_().masked_fill_(~same, 0.0).mul_(weight[r0:r1, None])
            if ctx.exclude_self:
                g_pos[:, r0:r1].diagonal().zero_()
            # softmax over N(i), (b, M), in the buffer of s (not needed any more); a row without negatives has lse
            # -inf (exp gives inf) but is all `same`, so masked_fill (not a multiplication, which would give NaN)
            # zeroes it entirely.
            p_neg = s.sub_(lse[r0:r1, None]).exp_().masked_fill_(same, 0.0)
            d_s = p_neg.mul_(g_pos.sum(dim=1, keepdim=True)).sub_(g_pos)  # dL/ds, (b, M)
            grad_rows_parts.append(d_s @ z_cols)  # (b, M) x (M, D) -> (b, D); times 1/t below
            if need_cols:  # not for a detached contrast set such as a memory: one product of four saved
                block_cols = d_s.T @ scaled[r0:r1]  # (M, b) x (b, D) -> (M, D), 1/t already in `scaled`
                grad_cols = block_cols if grad_cols is None else grad_cols.add_(block_cols)
        grad_rows = _cat(grad_rows_parts).mul_(ctx.inv_t)
        return grad_rows, None, grad_cols, None, None, None, None


def blockwise_infonce(z_rows: Tensor, y_rows: Tensor, z_cols: Tensor, y_cols: Tensor, *, temperature: float,
                      exclude_self: bool, block_elements: int = BLOCK_ELEMENTS) -> Tensor:
    """Mean over anchors of Eq. 1-2 in row blocks of at most ``block_elements`` similarities.

    Args:
        z_rows: ``(N, D)`` anchors (float32, L2-normalised).
        y_rows: ``(N,)`` their classes.
        z_cols: ``(M, D)`` contrast set; the same tensor as ``z_rows`` when ``exclude_self``.
        y_cols: ``(M,)`` its classes.
        temperature: ``t``.
        exclude_self: rows and columns are one set and an anchor is not its own positive.
        block_elements: similarity entries computed at once; bounds the transient memory.

    Returns:
        The scalar loss (``N, M > 0``; the caller handles empty sets).
    """
    block = max(1, min(z_rows.shape[0], block_elements // max(1, z_cols.shape[0])))
    return _BlockwiseInfoNCE.apply(z_rows, y_rows, z_cols, y_cols, 1.0 / temperature, exclude_self, block)
