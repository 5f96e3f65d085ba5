"""Fused Triton kernels for the supervised InfoNCE of Eq. 1-2 (the CUDA path of :func:`supervised_infonce`).

Why our own kernels: at the paper's anchor counts the PyTorch formulation in :mod:`contrastseg.losses.infonce` is
bound by kernel launches (about 25 per term) and, for ADE20K-sized anchor sets, by memory traffic over the
``N x M`` similarities (each elementwise step reads and writes them). These kernels compute the same quantities
the way flash attention does: tiles of ``s = z_i . z_j / t`` live in registers and are never written to memory,
and one term costs three launches (one forward, two backward).

Per row ``i`` (``lse_i`` = log-sum-exp of ``s_in`` over the negatives ``N(i)``, ``-inf`` when there are none):

* forward, pass 1 over the columns: ``lse_i`` (online, as in flash attention);
* forward, pass 2: ``L_i = 1/|P(i)| sum_{j in P(i)} softplus(lse_i - s_ij)`` and ``S_i = 1/|P(i)| sum_{j in P(i)}
  sigmoid(lse_i - s_ij)``, which the backward needs;
* backward: ``dL/ds_ij = c * (S_i softmax_{N(i)}(s_i)_j - sigmoid(lse_i - s_ij) / |P(i)| [j in P(i)])`` with
  ``c = grad / N``; one kernel accumulates ``dq = dS k / t`` over column tiles, one ``dk = dS^T q / t`` over row
  tiles (no atomics, so both are deterministic).

The matrix products use ``tf32x3`` (three TF32 tensor-core products, float32 accuracy to about 1e-6): full IEEE
float32 products on CUDA cores would be several times slower, plain TF32 has a 1e-3 relative error.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

try:  # Triton ships with PyTorch's CUDA wheels on Linux; without it the PyTorch path is used.
    import triton
    import triton.language as tl
    from triton.runtime.errors import OutOfResources
except ImportError:  # pragma: no cover - depends on the installation
    triton = None

__all__ = ["available", "triton_infonce"]

PRECISION = "tf32x3"
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"  # Triton's CPU interpreter (used by the tests)


def available(device: torch.device) -> bool:
    """Whether the fused kernels can run on ``device`` (CUDA with Triton, or any device under the interpreter)."""
    return triton is not None and (device.type == "cuda" or _INTERPRET)


if triton is not None:

    @triton.jit
    def _load_rows(P, idx, n, dims, D):
        """Rows ``P[idx]`` of an ``(n, D)`` float32 matrix as a ``(len(idx), BLOCK_D)`` tile, zero-padded."""
        return tl.load(P + idx[:, None] * D + dims[None, :], mask=(idx[:, None] < n) & (dims[None, :] < D), other=0.0)

    @triton.jit
    def _tile(q, k, yq, yk, rows, cols, N, M, EXCLUDE_SELF: tl.constexpr, PRECISION: tl.constexpr):
        """Similarities ``s`` (BM, BN) of a tile (``q`` holds 1/t) and its positive / negative masks."""
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION)  # (BM, BD) x (BD, BN) -> (BM, BN)
        valid = (rows[:, None] < N) & (cols[None, :] < M)  # padding is neither positive nor negative
        neg = valid & (yq[:, None] != yk[None, :])
        pos = valid & (yq[:, None] == yk[None, :])
        if EXCLUDE_SELF:  # the anchor is not its own positive
            pos = pos & (rows[:, None] != cols[None, :])
        return s, pos, neg

    @triton.jit
    def _ds(s, pos, neg, lse, w, g):
        """``dL/ds`` of a tile: ``g_i softmax_N(i)(s_i) - w_i sigmoid(lse_i - s_ij) [pos]`` (BM, BN)."""
        p_neg = tl.where(neg, tl.exp(s - lse[:, None]), 0.0)  # s_in <= lse_i on negatives: no overflow
        g_pos = tl.where(pos, tl.sigmoid(lse[:, None] - s), 0.0) * w[:, None]
        return p_neg * g[:, None] - g_pos

    @triton.jit
    def _forward_kernel(Q, K, YQ, YK, STATS, N, M, D, inv_t, EXCLUDE_SELF: tl.constexpr, PRECISION: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        dims = tl.arange(0, BLOCK_D)
        rmask = rows < N
        q = _load_rows(Q, rows, N, dims, D) * inv_t  # (BM, BD), the temperature folded in once
        yq = tl.load(YQ + rows, mask=rmask, other=-1)
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)  # running max over negatives
        l_i = tl.zeros([BLOCK_M], tl.float32)  # running sum of exp(s - m_i) over negatives
        for n0 in range(0, M, BLOCK_N):
            cols = n0 + tl.arange(0, BLOCK_N)
            k = _load_rows(K, cols, M, dims, D)
            yk = tl.load(YK + cols, mask=cols < M, other=-1)
            s, pos, neg = _tile(q, k, yq, yk, rows, cols, N, M, EXCLUDE_SELF, PRECISION)
            s_neg = tl.where(neg, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s_neg, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # no negative yet: avoid -inf - -inf
            l_i = l_i * tl.exp(m_i - m_safe) + tl.sum(tl.exp(s_neg - m_safe[:, None]), 1)
            m_i = m_new
        lse = tl.where(l_i > 0, m_i + tl.log(l_i), float("-inf"))  # (BM,)
        loss = tl.zeros([BLOCK_M], tl.float32)
        sig = tl.zeros([BLOCK_M], tl.float32)
        npos = tl.zeros([BLOCK_M], tl.float32)
        for n0 in range(0, M, BLOCK_N):
            cols = n0 + tl.arange(0, BLOCK_N)
            k = _load_rows(K, cols, M, dims, D)
            yk = tl.load(YK + cols, mask=cols < M, other=-1)
            s, pos, neg = _tile(q, k, yq, yk, rows, cols, N, M, EXCLUDE_SELF, PRECISION)
            x = lse[:, None] - s  # -inf without negatives: softplus 0, sigmoid 0
            softplus = tl.maximum(x, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(x)))
            loss += tl.sum(tl.where(pos, softplus, 0.0), 1)
            sig += tl.sum(tl.where(pos, tl.sigmoid(x), 0.0), 1)
            npos += tl.sum(pos.to(tl.float32), 1)
        inv_npos = 1.0 / tl.maximum(npos, 1.0)  # rows without positives contribute 0
        tl.store(STATS + rows, loss * inv_npos, mask=rmask)
        tl.store(STATS + N + rows, lse, mask=rmask)
        tl.store(STATS + 2 * N + rows, inv_npos, mask=rmask)
        tl.store(STATS + 3 * N + rows, sig * inv_npos, mask=rmask)

    @triton.jit
    def _grad_rows_kernel(Q, K, YQ, YK, STATS, GRAD, DQ, N, M, D, inv_t, EXCLUDE_SELF: tl.constexpr,
                          PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                          BLOCK_D: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        dims = tl.arange(0, BLOCK_D)
        rmask = rows < N
        q = _load_rows(Q, rows, N, dims, D) * inv_t
        yq = tl.load(YQ + rows, mask=rmask, other=-1)
        c = tl.load(GRAD) / N  # d total / d mean
        lse = tl.load(STATS + N + rows, mask=rmask, other=0.0)
        w = tl.load(STATS + 2 * N + rows, mask=rmask, other=0.0) * c
        g = tl.load(STATS + 3 * N + rows, mask=rmask, other=0.0) * c
        dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        for n0 in range(0, M, BLOCK_N):
            cols = n0 + tl.arange(0, BLOCK_N)
            k = _load_rows(K, cols, M, dims, D)
            yk = tl.load(YK + cols, mask=cols < M, other=-1)
            s, pos, neg = _tile(q, k, yq, yk, rows, cols, N, M, EXCLUDE_SELF, PRECISION)
            dq += tl.dot(_ds(s, pos, neg, lse, w, g), k, input_precision=PRECISION)  # (BM, BN) x (BN, BD)
        tl.store(DQ + rows[:, None] * D + dims[None, :], dq * inv_t, mask=rmask[:, None] & (dims[None, :] < D))

    @triton.jit
    def _grad_cols_kernel(Q, K, YQ, YK, STATS, GRAD, DQ, DK, N, M, D, inv_t, EXCLUDE_SELF: tl.constexpr,
                          PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                          BLOCK_D: tl.constexpr):
        cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        dims = tl.arange(0, BLOCK_D)
        k = _load_rows(K, cols, M, dims, D)
        yk = tl.load(YK + cols, mask=cols < M, other=-1)
        c = tl.load(GRAD) / N
        dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
        for m0 in range(0, N, BLOCK_M):
            rows = m0 + tl.arange(0, BLOCK_M)
            rmask = rows < N
            q = _load_rows(Q, rows, N, dims, D) * inv_t
            yq = tl.load(YQ + rows, mask=rmask, other=-1)
            s, pos, neg = _tile(q, k, yq, yk, rows, cols, N, M, EXCLUDE_SELF, PRECISION)
            lse = tl.load(STATS + N + rows, mask=rmask, other=0.0)
            w = tl.load(STATS + 2 * N + rows, mask=rmask, other=0.0) * c
            g = tl.load(STATS + 3 * N + rows, mask=rmask, other=0.0) * c
            dk += tl.dot(tl.trans(_ds(s, pos, neg, lse, w, g)), q, input_precision=PRECISION)  # (BN, BM) x (BM, BD)
        out = dk  # q held 1/t already
        cmask = (cols[:, None] < M) & (dims[None, :] < D)
        if EXCLUDE_SELF:  # rows and columns are one set: return one gradient, d/dq + d/dk
            out += tl.load(DQ + cols[:, None] * D + dims[None, :], mask=cmask, other=0.0)
        tl.store(DK + cols[:, None] * D + dims[None, :], out, mask=cmask)


def _configs(d: int) -> list[dict[str, int]]:
    """Tile shapes to try, fastest first: the whole embedding in one tile (``d`` padded to a power of two)."""
    block_d = max(16, triton.next_power_of_2(d))
    wide = block_d > 128  # 256-d embeddings: narrower tiles keep q, k and the accumulator within shared memory
    if _INTERPRET:
        return [{"BLOCK_M": 64, "BLOCK_N": 32 if wide else 64, "BLOCK_D": block_d}]
    tiles = ([(64, 32, 8, 2), (32, 32, 4, 2), (32, 32, 4, 1), (16, 16, 4, 1)] if wide else
             [(64, 64, 4, 2), (64, 32, 4, 2), (32, 32, 4, 1), (16, 16, 4, 1)])
    return [{"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_D": block_d, "num_warps": w, "num_stages": st}
            for bm, bn, w, st in tiles]


_CHOSEN: dict[tuple[str, int, bool], dict[str, int]] = {}  # the first tile shape that fits, per kernel and width


def _launch(name: str, kernel: Any, extent: int, tile: str, d: int, *args: Any, exclude_self: bool) -> None:
    """Launch ``kernel`` over ``extent`` rows (``tile="BLOCK_M"``) or columns (``"BLOCK_N"``).

    The shared memory a tile shape needs depends on the compiler and the device (an H100 has 227 KiB per block,
    an A100 163 KiB, consumer cards less), so shapes are tried fastest first and the first that loads is kept.
    A shape that does not fit fails before the kernel runs, so retrying is safe.
    """
    key = (name, d, exclude_self)
    candidates = [_CHOSEN[key]] if key in _CHOSEN else _configs(d)
    for i, cfg in enumerate(candidates):
        try:
            kernel[(triton.cdiv(extent, cfg[tile]),)](*args, EXCLUDE_SELF=exclude_self, PRECISION=PRECISION, **cfg)
        except OutOfResources:
            if i == len(candidates) - 1:
                raise
            continue
        _CHOSEN[key] = cfg
        return


class _TritonInfoNCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, z_rows: Tensor, y_rows: Tensor, z_cols: Tensor, y_cols: Tensor,  # type: ignore[override]
                inv_t: float, exclude_self: bool) -> Tensor:
        n, d = z_rows.shape
        m = z_cols.shape[0]
        stats = torch.empty(4, n, dtype=torch.float32, device=z_rows.device)  # loss_i, lse_i, 1/|P(i)|, S_i
        _launch("forward", _forward_kernel, n, "BLOCK_M", d, z_rows, z_cols, y_rows, y_cols, stats, n, m, d, inv_t,
                exclude_self=exclude_self)
        ctx.save_for_backward(z_rows, y_rows, z_cols, y_cols, stats)
        ctx.inv_t, ctx.exclude_self = inv_t, exclude_self
        return stats[0].mean()

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        z_rows, y_rows, z_cols, y_cols, stats = ctx.saved_tensors
        n, d = z_rows.shape
        m = z_cols.shape[0]
        grad = grad_out.float().contiguous()  # a 0-d tensor read by the kernels: no host sync
        dq = torch.empty_like(z_rows)
        args = (z_rows, z_cols, y_rows, y_cols, stats, grad)
        _launch("grad_rows", _grad_rows_kernel, n, "BLOCK_M", d, *args, dq, n, m, d, ctx.inv_t,
                exclude_self=ctx.exclude_self)
        dk = dq if ctx.exclude_self else torch.empty_like(z_cols)  # in place: each column tile reads its own rows
        _launch("grad_cols", _grad_cols_kernel, m, "BLOCK_N", d, *args, dq, dk, n, m, d, ctx.inv_t,
                exclude_self=ctx.exclude_self)
        if ctx.exclude_self:  # one set (z_rows is z_cols): the whole gradient went to the first input
            return dk, None, None, None, None, None
        return dq, None, dk, None, None, None


def triton_infonce(z_rows: Tensor, y_rows: Tensor, z_cols: Tensor, y_cols: Tensor, *, temperature: float,
                   exclude_self: bool) -> Tensor:
    """Mean over anchors of Eq. 1-2 with fused kernels; inputs are float32 unit rows and their labels.

    Args:
        z_rows: ``(N, D)`` anchors (float32, L2-normalised).
        y_rows: ``(N,)`` their classes.
        z_cols: ``(M, D)`` contrast set; the same tensor as ``z_rows`` when ``exclude_self``.
        y_cols: ``(M,)`` its classes.
        temperature: ``t``.
        exclude_self: rows and columns are one set and an anchor is not its own positive.

    Returns:
        The scalar loss (``N, M > 0``; the caller handles empty sets).
    """
    z_rows, z_cols = z_rows.contiguous(), z_cols.contiguous()
    y_rows, y_cols = y_rows.contiguous(), y_cols.contiguous()
    return _TritonInfoNCE.apply(z_rows, y_rows, z_cols, y_cols, 1.0 / temperature, exclude_self)
