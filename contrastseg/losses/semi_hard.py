"""Semi-hard example sampling of pixel contrast [36] against a detached memory, without an N x M matrix kept for
autograd.

For every anchor ``i`` [36] first gathers the ``fraction`` (10%) *nearest* negatives and the ``fraction`` *farthest*
positives among the memory entries, then draws ``num_negatives`` / ``num_positives`` of them at random (all of them
when there are fewer). The loss is Eq. 1-2 on those sets only:

    L_i = 1/|P_i| sum_{j in P_i} softplus( logsumexp_{n in N_i} s_in - s_ij ),   s = z_i . m_j / t

:func:`select_semi_hard` draws the sets (``(N, K)`` column indices, no gradient); :func:`selected_infonce` computes
the loss blockwise and recomputes the similarity blocks in its backward (the memory is detached, so only the anchors
receive gradients), so memory is ``O(block x M)`` at any time.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["select_semi_hard", "selected_infonce"]

_BLOCK_ELEMENTS = 1 << 23


def _rows_per_block(m: int) -> int:
    return max(1, _BLOCK_ELEMENTS // max(1, m))


def _draw(scores: Tensor, allowed: Tensor, fraction: float, count: int, generator: torch.Generator | None
          ) -> tuple[Tensor, Tensor]:
    """Per row, ``count`` random columns among the ``ceil(fraction * allowed)`` highest-scoring allowed ones."""
    top = torch.ceil(allowed.sum(dim=1).float() * fraction).long()  # (b,) size of each row's semi-hard pool
    width = int(top.max()) if top.numel() else 0
    pool_scores, pool = torch.topk(scores.masked_fill(~allowed, float("-inf")), width, dim=1)  # (b, width)
    in_pool = torch.arange(width, device=scores.device)[None, :] < top[:, None]  # (b, width)
    keys = torch.rand(pool.shape, generator=generator, device=generator.device if generator else "cpu")
    keys = keys.to(scores.device).masked_fill(~in_pool, -1.0)  # a random order of each row's pool
    chosen_keys, chosen = torch.topk(keys, min(count, width), dim=1)  # (b, K)
    del pool_scores
    return pool.gather(1, chosen), chosen_keys >= 0  # (b, K) columns, valid


@torch.no_grad()
def select_semi_hard(anchors: Tensor, labels: Tensor, memory: Tensor, memory_labels: Tensor, *,
                     fraction: float = 0.1, num_positives: int = 1024, num_negatives: int = 2048,
                     generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Each anchor's semi-hard positives and negatives among the memory entries.

    Args:
        anchors: ``(N, D)`` unit rows.
        labels: ``(N,)`` their classes.
        memory: ``(M, D)`` unit rows.
        memory_labels: ``(M,)`` their classes.
        fraction: share of the nearest negatives / farthest positives each draw is made from (0.1).
        num_positives: positives per anchor at most.
        num_negatives: negatives per anchor at most.
        generator: random source on the anchors' device.

    Returns:
        ``positives`` ``(N, Kp)`` and ``negatives`` ``(N, Kn)`` column indices into ``memory``, with ``(N, Kp)`` /
        ``(N, Kn)`` masks of the valid ones (a row with fewer candidates has invalid trailing entries).
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    parts: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
    block = _rows_per_block(memory.shape[0])
    for r0 in range(0, anchors.shape[0], block):
        s = anchors[r0:r0 + block].float() @ memory.float().T  # (b, D) x (D, M) -> (b, M)
        same = labels[r0:r0 + block, None] == memory_labels[None, :]  # (b, M)
        pos = _draw(-s, same, fraction, num_positives, generator)  # farthest positives: lowest similarity
        neg = _draw(s, ~same, fraction, num_negatives, generator)  # nearest negatives: highest similarity
        parts.append((*pos, *neg))
    if not parts:
        empty = torch.zeros(0, 0, dtype=torch.long, device=anchors.device)
        return empty, empty.bool(), empty, empty.bool()
    widths = [max(p[i].shape[1] for p in parts) for i in (0, 2)]  # blocks may draw different widths: pad them
    out = []
    for i, width in zip((0, 2), widths):
        out.append(torch.cat([F.pad(p[i], (0, width - p[i].shape[1])) for p in parts]))
        out.append(torch.cat([F.pad(p[i + 1], (0, width - p[i + 1].shape[1]), value=False) for p in parts]))
    return out[0], out[1], out[2], out[3]


def _block_terms(z: Tensor, memory: Tensor, pos: Tensor, pos_ok: Tensor, neg: Tensor, neg_ok: Tensor,
                 inv_t: float) -> tuple[Tensor, Tensor, Tensor]:
    s = (z * inv_t) @ memory.T  # (b, D) x (D, M) -> (b, M)
    sp = s.gather(1, pos)  # (b, Kp)
    sn = s.gather(1, neg).masked_fill_(~neg_ok, float("-inf"))  # (b, Kn)
    return sp, sn, torch.logsumexp(sn, dim=1)  # lse (b,), -inf without negatives


class _SelectedInfoNCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, z: Tensor, memory: Tensor, pos: Tensor, pos_ok: Tensor, neg: Tensor,  # type: ignore[override]
                neg_ok: Tensor, inv_t: float) -> Tensor:
        n, block = z.shape[0], _rows_per_block(memory.shape[0])
        total = z.new_zeros(())
        for r0 in range(0, n, block):
            sl = slice(r0, r0 + block)
            sp, _, lse = _block_terms(z[sl], memory, pos[sl], pos_ok[sl], neg[sl], neg_ok[sl], inv_t)
            pair = F.softplus(lse[:, None] - sp).masked_fill_(~pos_ok[sl], 0.0)  # (b, Kp)
            total += (pair.sum(dim=1) / pos_ok[sl].sum(dim=1).clamp_min(1)).sum()
        ctx.save_for_backward(z, memory, pos, pos_ok, neg, neg_ok)
        ctx.inv_t = inv_t
        return total / n

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        z, memory, pos, pos_ok, neg, neg_ok = ctx.saved_tensors
        n, block = z.shape[0], _rows_per_block(memory.shape[0])
        grads = []
        for r0 in range(0, n, block):
            sl = slice(r0, r0 + block)
            sp, sn, lse = _block_terms(z[sl], memory, pos[sl], pos_ok[sl], neg[sl], neg_ok[sl], ctx.inv_t)
            weight = grad_out / n / pos_ok[sl].sum(dim=1).clamp_min(1)  # (b,)
            g_pos = torch.sigmoid(lse[:, None] - sp).masked_fill_(~pos_ok[sl], 0.0) * weight[:, None]  # (b, Kp)
            p_neg = (sn - lse[:, None]).exp_().masked_fill_(~neg_ok[sl], 0.0)  # softmax over N_i, (b, Kn)
            d_s = z.new_zeros(sp.shape[0], memory.shape[0])  # (b, M) dL/ds, dense for one product
            d_s.scatter_add_(1, pos[sl], -g_pos)
            d_s.scatter_add_(1, neg[sl], p_neg * g_pos.sum(dim=1, keepdim=True))
            grads.append(d_s @ memory * ctx.inv_t)  # (b, M) x (M, D) -> (b, D)
        return torch.cat(grads), None, None, None, None, None, None


def selected_infonce(anchors: Tensor, memory: Tensor, positives: Tensor, positive_valid: Tensor, negatives: Tensor,
                     negative_valid: Tensor, *, temperature: float) -> Tensor:
    """Eq. 1-2 of every anchor against its own selected memory columns; the mean over anchors.

    Args:
        anchors: ``(N, D)`` unit rows (gradients flow to them).
        memory: ``(M, D)`` unit rows, detached.
        positives: ``(N, Kp)`` column indices of each anchor's positives; ``positive_valid`` ``(N, Kp)`` masks them.
        negatives: ``(N, Kn)`` column indices of each anchor's negatives; ``negative_valid`` ``(N, Kn)``.
        temperature: ``t``.

    Returns:
        Scalar, float32; an anchor without positives adds 0, without negatives its terms are 0.
    """
    if anchors.shape[0] == 0 or memory.shape[0] == 0 or positives.shape[1] == 0:
        return anchors.float().reshape(-1)[:0].sum()  # graph-connected exact 0
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a positive number, got {temperature}")
    return _SelectedInfoNCE.apply(anchors.float(), memory.detach().float(), positives, positive_valid, negatives,
                                  negative_valid, 1.0 / temperature)
