"""Supervised InfoNCE of paper Eq. 1-2, exact, in float32, without storing the N x M similarity for autograd.

For anchor ``i`` with positives ``P(i)`` (same class, not ``i`` itself) and negatives ``N(i)`` (other classes),

    L_i = 1/|P(i)| * sum_{j in P(i)} -log( e^{s_ij} / (e^{s_ij} + sum_{n in N(i)} e^{s_in}) ),   s = z.z' / t

and the loss is the mean of ``L_i`` over all anchors (an anchor without positives contributes 0). With
``lse_i = logsumexp_{n in N(i)} s_in`` every pair term is ``softplus(lse_i - s_ij)``: stable for any
temperature, and exactly 0 when ``N(i)`` is empty. The gradient with respect to the similarities is closed-form,

    dL/ds_ij = -g_ij  for j in P(i),   dL/ds_in = (sum_j g_ij) * softmax_{N(i)}(s_i)_n  for n in N(i),
    g_ij = sigmoid(lse_i - s_ij) / (|A| |P(i)|),

so a custom autograd function processes row blocks forward and recomputes them backward, the way
memory-efficient attention does: memory is ``O(block x M)`` instead of ``O(N x M)`` kept for autograd.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["supervised_infonce"]

_BLOCK_ELEMENTS = 1 << 23  # similarity entries per row block (32 MiB of float32 per temporary)


def _block_terms(
    z_rows: Tensor, y_rows: Tensor, z_cols: Tensor, y_cols: Tensor, inv_t: float, row_offset: int, exclude_self: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Similarities ``(b, M)`` and positive/negative masks of one row block."""
    s = (z_rows @ z_cols.T) * inv_t  # (b, D) x (D, M) -> (b, M)
    same = y_rows[:, None] == y_cols[None, :]  # (b, M)
    neg = ~same
    if exclude_self:  # the anchor itself is neither positive nor negative
        rows = torch.arange(row_offset, row_offset + z_rows.shape[0], device=s.device)
        same = same & (rows[:, None] != torch.arange(z_cols.shape[0], device=s.device)[None, :])
    return s, same, neg


class _BlockwiseInfoNCE(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, z_rows: Tensor, y_rows: Tensor, z_cols: Tensor, y_cols: Tensor, inv_t: float, exclude_self: bool,
        block: int,
    ) -> Tensor:
        n = z_rows.shape[0]
        lse = torch.empty(n, device=z_rows.device, dtype=torch.float32)
        n_pos = torch.empty(n, device=z_rows.device, dtype=torch.float32)
        total = z_rows.new_zeros((), dtype=torch.float32)
        for r0 in range(0, n, block):
            r1 = min(r0 + block, n)
            s, pos, neg = _block_terms(z_rows[r0:r1], y_rows[r0:r1], z_cols, y_cols, inv_t, r0, exclude_self)
            lse_b = torch.logsumexp(s.masked_fill(~neg, float("-inf")), dim=1)  # (b,), -inf without negatives
            per_pair = F.softplus(lse_b[:, None] - s).masked_fill_(~pos, 0.0)  # (b, M)
            npos_b = pos.sum(dim=1).float()
            total = total + (per_pair.sum(dim=1) / npos_b.clamp_min(1.0)).sum()
            lse[r0:r1], n_pos[r0:r1] = lse_b, npos_b
        ctx.save_for_backward(z_rows, y_rows, z_cols, y_cols, lse, n_pos)
        ctx.inv_t, ctx.exclude_self, ctx.block = inv_t, exclude_self, block
        return total / n

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        z_rows, y_rows, z_cols, y_cols, lse, n_pos = ctx.saved_tensors
        inv_t, block = ctx.inv_t, ctx.block
        n = z_rows.shape[0]
        grad_rows = torch.zeros_like(z_rows)
        grad_cols = torch.zeros_like(z_cols)
        weight = torch.where(n_pos > 0, grad_out.float() / (n * n_pos.clamp_min(1.0)), torch.zeros_like(n_pos))
        lse_safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
        for r0 in range(0, n, block):
            r1 = min(r0 + block, n)
            s, pos, neg = _block_terms(z_rows[r0:r1], y_rows[r0:r1], z_cols, y_cols, inv_t, r0, ctx.exclude_self)
            g_pos = torch.sigmoid(lse[r0:r1, None] - s).masked_fill_(~pos, 0.0) * weight[r0:r1, None]  # (b, M)
            p_neg = torch.exp(s - lse_safe[r0:r1, None]).masked_fill_(~neg, 0.0)  # softmax over N(i), (b, M)
            d_s = p_neg.mul_(g_pos.sum(dim=1, keepdim=True)).sub_(g_pos).mul_(inv_t)  # dL/d(z_i.z_j), (b, M)
            grad_rows[r0:r1] = d_s @ z_cols  # (b, M) x (M, D) -> (b, D)
            grad_cols.addmm_(d_s.T, z_rows[r0:r1])  # (M, b) x (b, D) -> (M, D)
        return grad_rows, None, grad_cols, None, None, None, None


def supervised_infonce(
    anchors: Tensor,
    labels: Tensor,
    contrast: Tensor | None = None,
    contrast_labels: Tensor | None = None,
    *,
    temperature: float = 0.1,
    block_elements: int = _BLOCK_ELEMENTS,
) -> Tensor:
    """Supervised InfoNCE (paper Eq. 1-2) of anchors against a contrast set.

    Args:
        anchors: ``(N, D)`` anchor embeddings (L2-normalised here, in float32 even under autocast).
        labels: ``(N,)`` anchor classes.
        contrast: ``(M, D)`` the set positives and negatives come from; ``None``: the anchors themselves
            (the per-scale term, where an anchor is never its own positive). Gradients reach both sets.
        contrast_labels: ``(M,)`` classes of ``contrast`` (required with ``contrast``).
        temperature: ``t`` in ``s = z_i . z_j / t``.
        block_elements: similarity entries computed at once; bounds the transient memory.

    Returns:
        Scalar loss, mean over anchors. An exact, graph-connected 0 when there are no anchors, no contrast
        samples, no positives or no negatives (for example a single class), so every parameter still receives
        a (zero) gradient.
    """
    if (contrast is None) != (contrast_labels is None):
        raise ValueError("give contrast and contrast_labels together")
    exclude_self = contrast is None
    with torch.autocast(anchors.device.type, enabled=False):
        z_rows = F.normalize(anchors.float(), dim=1)
        z_cols = z_rows if contrast is None else F.normalize(contrast.float(), dim=1)
        y_cols = labels if contrast_labels is None else contrast_labels
        zero = anchors.reshape(-1)[:0].float().sum()  # graph-connected exact 0
        if contrast is not None:
            zero = zero + contrast.reshape(-1)[:0].float().sum()
        if z_rows.shape[0] == 0 or z_cols.shape[0] == 0:
            return zero
        block = max(1, min(z_rows.shape[0], block_elements // max(1, z_cols.shape[0])))
        loss = _BlockwiseInfoNCE.apply(z_rows, labels, z_cols, y_cols, 1.0 / temperature, exclude_self, block)
        return loss + zero
