"""Fused Triton kernels for the supervised InfoNCE of Eq. 1-2 (the CUDA path of :func:`supervised_infonce`).

Why our own kernels: at the paper's anchor counts the PyTorch formulation in :mod:`contrastseg.losses.infonce` is
bound by kernel launches (about 25 per term) and, for ADE20K-sized anchor sets, by memory traffic over the
``N x M`` similarities (each elementwise step reads and writes them). These kernels compute the same quantities
the way flash attention does: tiles of ``s = z_i . z_j / t`` live in registers and are never written to memory,
and one term costs two launches: the forward, which also computes the rows' gradient when one is needed, and one
backward kernel for the columns' gradient.

Per row ``i`` (``lse_i`` = log-sum-exp of ``s_in`` over the negatives ``N(i)``, ``-inf`` when there are none),
with ``dL/ds_ij = c * (S_i softmax_{N(i)}(s_i)_j - sigmoid(lse_i - s_ij) / |P(i)| [j in P(i)])``, ``c = grad / N``:

* forward, pass 1 over the columns: ``lse_i`` (online, as in flash attention) and, for the gradient,
  ``sum_{n in N(i)} softmax_{N(i)}(s_i)_n k_n`` (online too);
* forward, pass 2, over the column tiles that hold the row tile's positives (found in pass 1; a few tiles, as the
  sampler groups anchors by class): ``L_i = 1/|P(i)| sum_{j in P(i)} softplus(lse_i - s_ij)``,
  ``S_i = 1/|P(i)| sum_{j in P(i)} sigmoid(lse_i - s_ij)`` and ``sum_{j in P(i)} sigmoid(lse_i - s_ij) k_j``, which
  complete ``dq / c``: the rows' gradient is done when the forward is, except for the factor ``c``;
* backward: one kernel accumulates ``dk = dS^T q / t`` over row tiles (no atomics, so it is deterministic).

With :data:`SPLIT`, a term with few tiles cuts those loops into chunks run by separate programs (partial
log-sum-exps combined as in split-K attention, partial gradients summed), to fill the GPU; the rows' gradient then
comes from a backward kernel of its own.

The matrix products use ``tf32x3`` (three TF32 tensor-core products, float32 accuracy to about 1e-6): full IEEE
float32 products on CUDA cores would be several times slower, plain TF32 has a 1e-3 relative error.
"""

from __future__ import annotations

import os
import warnings
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


_WORKS: dict[int, bool] = {}  # per CUDA device: the kernels compiled and matched the PyTorch path


def available(device: torch.device) -> bool:
    """Whether the fused kernels run on ``device``: CUDA with Triton on an Ampere or newer GPU (the products use
    TF32 tensor cores), or any device under Triton's interpreter.

    The first call per GPU compiles the kernels on a small problem and compares them with the PyTorch path; if
    that fails (a Triton or driver version that cannot build them, an unexpected result), it warns once and the
    loss stays on the PyTorch path instead of failing a training run.
    """
    if triton is None or (device.type != "cuda" and not _INTERPRET):
        return False
    if _INTERPRET:
        return True
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _WORKS:
        _WORKS[index] = torch.cuda.get_device_capability(index)[0] >= 8 and _self_test(torch.device("cuda", index))
    return _WORKS[index]


def _self_test(device: torch.device) -> bool:
    """Compile the kernels on a small problem and compare them with the PyTorch path; warn and say False if not."""
    try:
        with torch.inference_mode(False), torch.enable_grad():  # the first call may come from an evaluation
            _compare_with_pytorch(device)
    except Exception as err:  # any failure means: do not use the kernels on this device
        warnings.warn(f"contrastseg: the Triton InfoNCE kernels failed their check on {device} "
                      f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); the contrastive loss "
                      "uses the PyTorch path (backend='torch') instead", RuntimeWarning, stacklevel=3)
        return False
    return True


def _compare_with_pytorch(device: torch.device) -> None:
    """Raise unless both backends agree on a per-scale and a cross-scale term (80 anchors, 256-d, 3 classes)."""
    from contrastseg.losses.infonce import l2_normalize, supervised_infonce  # a cycle at import time otherwise

    g = torch.Generator(device=device).manual_seed(0)
    z = torch.randn(80, 256, device=device, generator=g)
    y = torch.randint(0, 3, (80,), device=device, generator=g)
    results = []
    for fused in (False, True):
        x = z.clone().requires_grad_()
        if fused:  # one set (per-scale term) and two sets (cross-scale term)
            u = l2_normalize(x)
            loss = (triton_infonce(u, y, u, y, temperature=0.1, exclude_self=True)
                    + triton_infonce(u[:50], y[:50], u[50:], y[50:], temperature=0.1, exclude_self=False))
        else:
            loss = (supervised_infonce(x, y, backend="torch")
                    + supervised_infonce(x[:50], y[:50], x[50:], y[50:], backend="torch"))
        results.append((loss.detach(), torch.autograd.grad(loss, x)[0]))
    (ref, ref_grad), (got, got_grad) = results
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_grad, ref_grad, rtol=1e-3, atol=1e-6)


if triton is not None:

    @triton.jit
    def _load_rows(P, idx, n, dims, D):
        """Rows ``P[idx]`` of an ``(n, D)`` float32 matrix as a ``(len(idx), len(dims))`` tile, zero-padded."""
        return tl.load(P + idx[:, None] * D + dims[None, :], mask=(idx[:, None] < n) & (dims[None, :] < D), other=0.0)

    @triton.jit
    def _tile(Q, K, yq, yk, rows, cols, r_hi, c_hi, D, inv_t, EXCLUDE_SELF: tl.constexpr, PRECISION: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr):
        """Similarities ``s = q.k / t`` (BM, BN) of rows below ``r_hi`` and columns below ``c_hi``, and their positive
        / negative masks (padding is neither).

        The product runs over the embedding in ``BLOCK_K`` slices read from memory (cached): holding a whole
        256-wide float32 row tile in registers made every kernel spill (ptxas: 255 registers, kilobytes of spills).
        """
        s = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for d0 in tl.static_range(0, BLOCK_D, BLOCK_K):
            dims = d0 + tl.arange(0, BLOCK_K)
            q = _load_rows(Q, rows, r_hi, dims, D)  # (BM, BK)
            k = _load_rows(K, cols, c_hi, dims, D)  # (BN, BK)
            s += tl.dot(q, tl.trans(k), input_precision=PRECISION)  # (BM, BK) x (BK, BN) -> (BM, BN)
        valid = (rows[:, None] < r_hi) & (cols[None, :] < c_hi)
        neg = valid & (yq[:, None] != yk[None, :])
        pos = valid & (yq[:, None] == yk[None, :])
        if EXCLUDE_SELF:  # the anchor is not its own positive
            pos = pos & (rows[:, None] != cols[None, :])
        return s * inv_t, pos, neg

    @triton.jit
    def _ds(s, pos, neg, lse, w, g):
        """``dL/ds`` of a tile: ``g_i softmax_N(i)(s_i) - w_i sigmoid(lse_i - s_ij) [pos]`` (BM, BN)."""
        p_neg = tl.where(neg, tl.exp(s - lse[:, None]), 0.0)  # s_in <= lse_i on negatives: no overflow
        g_pos = tl.where(pos, tl.sigmoid(lse[:, None] - s), 0.0) * w[:, None]
        return p_neg * g[:, None] - g_pos

    @triton.jit
    def _column_tile(Q, K, yq, YK, rows, n0, N, c_hi, D, inv_t, EXCLUDE_SELF: tl.constexpr, PRECISION: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr):
        """Columns ``n0..n0+BN-1`` (below ``c_hi``) against the row tile: their indices, ``s`` and masks."""
        cols = n0 + tl.arange(0, BLOCK_N)
        yk = tl.load(YK + cols, mask=cols < c_hi, other=-1)
        s, pos, neg = _tile(Q, K, yq, yk, rows, cols, N, c_hi, D, inv_t, EXCLUDE_SELF, PRECISION, BLOCK_M, BLOCK_N,
                            BLOCK_D, BLOCK_K)
        return cols, s, pos, neg

    @triton.jit
    def _lse_pass(Q, K, yq, YK, rows, c_lo, c_hi, N, D, inv_t, EXCLUDE_SELF: tl.constexpr, PRECISION: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr,
                  WITH_GRAD: tl.constexpr = False):
        """Online max ``m`` and ``sum exp(s - m)`` over the negatives among columns ``c_lo..c_hi-1`` (BM,) each,
        and per row the range ``p_lo..p_hi-1`` of the columns that hold its positives (empty: ``c_hi..c_lo-1``).
        With ``WITH_GRAD`` also ``sum exp(s - m) k`` over the negatives (BM, BD), rescaled online as flash attention
        does: divided by the sum, it is the negatives' part of the rows' gradient.

        The ranges let the second pass visit only the column tiles that hold positives: anchors come grouped by
        class (:func:`~contrastseg.losses.sampling.sample_anchor_indices`), so a row tile's positives are one or two
        classes' runs of columns. For anchors in any other order the ranges are still exact, only wider.
        """
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        p_lo = tl.zeros([BLOCK_M], tl.int32) + c_hi
        p_hi = tl.zeros([BLOCK_M], tl.int32) + c_lo
        acc = tl.zeros([BLOCK_M, BLOCK_D if WITH_GRAD else 1], tl.float32)
        for n0 in range(c_lo, c_hi, BLOCK_N):
            cols, s, pos, neg = _column_tile(Q, K, yq, YK, rows, n0, N, c_hi, D, inv_t, EXCLUDE_SELF, PRECISION,
                                             BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_K)
            s_neg = tl.where(neg, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s_neg, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # no negative yet: avoid -inf - -inf
            alpha = tl.exp(m_i - m_safe)  # (BM,) rescales what was summed under the old max
            p = tl.exp(s_neg - m_safe[:, None])  # (BM, BN), 0 off the negatives
            l_i = l_i * alpha + tl.sum(p, 1)
            if WITH_GRAD:
                k = _load_rows(K, cols, c_hi, tl.arange(0, BLOCK_D), D)  # (BN, BD)
                acc = acc * alpha[:, None] + tl.dot(p, k, input_precision=PRECISION)  # (BM, BN) x (BN, BD)
            m_i = m_new
            p_lo = tl.minimum(p_lo, tl.min(tl.where(pos, cols[None, :], c_hi), 1))
            p_hi = tl.maximum(p_hi, tl.max(tl.where(pos, cols[None, :] + 1, c_lo), 1))
        return m_i, l_i, p_lo, p_hi, acc

    @triton.jit
    def _loss_pass(Q, K, yq, YK, rows, lse, c_lo, c_hi, N, D, inv_t, EXCLUDE_SELF: tl.constexpr,
                   PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                   BLOCK_K: tl.constexpr, WITH_GRAD: tl.constexpr = False):
        """Sums over the positives among columns ``c_lo..c_hi-1`` of softplus and sigmoid of ``lse - s``, and
        their count (BM,) each (``c_lo..c_hi-1``: a range :func:`_lse_pass` found to hold every positive); with
        ``WITH_GRAD`` also ``sum sigmoid(lse - s) k`` (BM, BD), the positives' part of the rows' gradient."""
        loss = tl.zeros([BLOCK_M], tl.float32)
        sig = tl.zeros([BLOCK_M], tl.float32)
        npos = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D if WITH_GRAD else 1], tl.float32)
        for n0 in range(c_lo, c_hi, BLOCK_N):
            cols, s, pos, _ = _column_tile(Q, K, yq, YK, rows, n0, N, c_hi, D, inv_t, EXCLUDE_SELF, PRECISION,
                                           BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_K)
            x = lse[:, None] - s  # -inf without negatives: softplus 0, sigmoid 0
            softplus = tl.maximum(x, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(x)))
            loss += tl.sum(tl.where(pos, softplus, 0.0), 1)
            sigmoid = tl.where(pos, tl.sigmoid(x), 0.0)  # (BM, BN)
            sig += tl.sum(sigmoid, 1)
            npos += tl.sum(pos.to(tl.float32), 1)
            if WITH_GRAD:
                k = _load_rows(K, cols, c_hi, tl.arange(0, BLOCK_D), D)  # (BN, BD)
                acc += tl.dot(sigmoid, k, input_precision=PRECISION)  # (BM, BN) x (BN, BD)
        return loss, sig, npos, acc

    @triton.jit
    def _chunk(extent, BLOCK: tl.constexpr, splits):
        """Whole tiles per split: split ``i`` covers ``[i * chunk, min((i + 1) * chunk, extent))``."""
        return tl.cdiv(tl.cdiv(extent, BLOCK), splits) * BLOCK

    @triton.jit
    def _row_program(YQ, N, M, SPLITS, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        """A (row tile, column chunk) program's rows, their labels, and its columns ``c_lo..c_hi-1``."""
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        split = tl.program_id(1)
        rmask = rows < N
        chunk = _chunk(M, BLOCK_N, SPLITS)
        c_lo = split * chunk
        c_hi = tl.minimum(c_lo + chunk, M)
        yq = tl.load(YQ + rows, mask=rmask, other=-1)
        return rows, rmask, yq, split, c_lo, c_hi

    @triton.jit
    def _forward_kernel(Q, K, YQ, YK, STATS, DQ, N, M, D, inv_t, EXCLUDE_SELF: tl.constexpr,
                        PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                        BLOCK_K: tl.constexpr, WITH_GRAD: tl.constexpr):
        """One program per row tile: pass 1 over all columns, pass 2 over those holding positives, then the four
        per-row statistics; with ``WITH_GRAD`` also the rows' gradient per unit of ``c = grad / N``, DQ (N, D),

            dq_i / c = (S_i sum_{n in N(i)} softmax_N(i)(s_i)_n k_n - 1/|P(i)| sum_{j in P(i)} sigmoid_ij k_j) / t,

        so the backward needs only the columns' kernel."""
        rows, rmask, yq, _, _, _ = _row_program(YQ, N, M, 1, BLOCK_M, BLOCK_N)
        m_i, l_i, p_lo, p_hi, acc_neg = _lse_pass(Q, K, yq, YK, rows, 0, M, N, D, inv_t, EXCLUDE_SELF, PRECISION,
                                                  BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_K, WITH_GRAD)
        lse = tl.where(l_i > 0, m_i + tl.log(l_i), float("-inf"))  # (BM,)
        dims = tl.arange(0, BLOCK_D)
        at = DQ + rows[:, None] * D + dims[None, :]
        dmask = rmask[:, None] & (dims[None, :] < D)
        if WITH_GRAD:  # parked in DQ during pass 2, which keeps its own accumulator in registers
            tl.store(at, acc_neg / tl.where(l_i > 0, l_i, 1.0)[:, None], mask=dmask)  # 0 without negatives
        loss, sig, npos, acc_pos = _loss_pass(Q, K, yq, YK, rows, lse, tl.min(p_lo, 0), tl.max(p_hi, 0), N, D,
                                              inv_t, EXCLUDE_SELF, PRECISION, BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_K,
                                              WITH_GRAD)
        inv_npos = 1.0 / tl.maximum(npos, 1.0)  # rows without positives contribute 0
        tl.store(STATS + rows, loss * inv_npos, mask=rmask)
        tl.store(STATS + N + rows, lse, mask=rmask)
        tl.store(STATS + 2 * N + rows, inv_npos, mask=rmask)
        tl.store(STATS + 3 * N + rows, sig * inv_npos, mask=rmask)
        if WITH_GRAD:
            softmax_k = tl.load(at, mask=dmask, other=0.0)  # (BM, BD)
            tl.store(at, (softmax_k * sig[:, None] - acc_pos) * (inv_npos * inv_t)[:, None], mask=dmask)

    @triton.jit
    def _lse_split_kernel(Q, K, YQ, YK, PART, RANGE, N, M, D, inv_t, SPLITS, EXCLUDE_SELF: tl.constexpr,
                          PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                          BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr):
        """Programs (row tile, column chunk): partial max and sum of the negatives, PART[0:2, split, rows], and the
        range of the chunk's columns holding each row's positives, RANGE[0:2, split, rows]."""
        rows, rmask, yq, split, c_lo, c_hi = _row_program(YQ, N, M, SPLITS, BLOCK_M, BLOCK_N)
        m_i, l_i, p_lo, p_hi, _ = _lse_pass(Q, K, yq, YK, rows, c_lo, c_hi, N, D, inv_t, EXCLUDE_SELF, PRECISION,
                                            BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_K)
        tl.store(PART + split * N + rows, m_i, mask=rmask)
        tl.store(PART + (SPLITS + split) * N + rows, l_i, mask=rmask)
        tl.store(RANGE + split * N + rows, p_lo, mask=rmask)
        tl.store(RANGE + (SPLITS + split) * N + rows, p_hi, mask=rmask)

    @triton.jit
    def _loss_split_kernel(Q, K, YQ, YK, STATS, PART, RANGE, N, M, D, inv_t, SPLITS, EXCLUDE_SELF: tl.constexpr,
                           PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                           BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr):
        """Programs (row tile, column chunk): lse from all chunks' partials, then this chunk's partial sums of the
        positives (over its columns holding them, RANGE), PART[2:5, split, rows]; chunk 0 also writes lse to
        STATS[1]."""
        rows, rmask, yq, split, c_lo, c_hi = _row_program(YQ, N, M, SPLITS, BLOCK_M, BLOCK_N)
        m = tl.full([BLOCK_M], float("-inf"), tl.float32)
        p_lo = tl.zeros([BLOCK_M], tl.int32) + M  # columns holding the rows' positives, over all chunks
        p_hi = tl.zeros([BLOCK_M], tl.int32)
        for i in range(0, SPLITS):
            m = tl.maximum(m, tl.load(PART + i * N + rows, mask=rmask, other=float("-inf")))
            p_lo = tl.minimum(p_lo, tl.load(RANGE + i * N + rows, mask=rmask, other=M))
            p_hi = tl.maximum(p_hi, tl.load(RANGE + (SPLITS + i) * N + rows, mask=rmask, other=0))
        m_safe = tl.where(m == float("-inf"), 0.0, m)
        total = tl.zeros([BLOCK_M], tl.float32)
        for i in range(0, SPLITS):
            m_i = tl.load(PART + i * N + rows, mask=rmask, other=float("-inf"))
            total += tl.load(PART + (SPLITS + i) * N + rows, mask=rmask, other=0.0) * tl.exp(m_i - m_safe)
        lse = tl.where(total > 0, m + tl.log(total), float("-inf"))
        # This chunk's columns that hold positives (the chunks' bounds may differ from the first kernel's, whose
        # tile shape can differ, so the ranges are combined over all chunks first).
        p_lo = tl.maximum(tl.min(p_lo, 0), c_lo)
        p_hi = tl.minimum(tl.max(p_hi, 0), c_hi)
        loss, sig, npos, _ = _loss_pass(Q, K, yq, YK, rows, lse, p_lo, p_hi, N, D, inv_t, EXCLUDE_SELF, PRECISION,
                                        BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_K)
        tl.store(PART + (2 * SPLITS + split) * N + rows, loss, mask=rmask)
        tl.store(PART + (3 * SPLITS + split) * N + rows, sig, mask=rmask)
        tl.store(PART + (4 * SPLITS + split) * N + rows, npos, mask=rmask)
        tl.store(STATS + N + rows, lse, mask=rmask & (split == 0))

    @triton.jit
    def _finalize_kernel(STATS, PART, N, SPLITS, BLOCK: tl.constexpr):
        """The per-row statistics from the chunks' partial sums."""
        rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        rmask = rows < N
        loss = tl.zeros([BLOCK], tl.float32)
        sig = tl.zeros([BLOCK], tl.float32)
        npos = tl.zeros([BLOCK], tl.float32)
        for i in range(0, SPLITS):
            loss += tl.load(PART + (2 * SPLITS + i) * N + rows, mask=rmask, other=0.0)
            sig += tl.load(PART + (3 * SPLITS + i) * N + rows, mask=rmask, other=0.0)
            npos += tl.load(PART + (4 * SPLITS + i) * N + rows, mask=rmask, other=0.0)
        inv_npos = 1.0 / tl.maximum(npos, 1.0)
        tl.store(STATS + rows, loss * inv_npos, mask=rmask)
        tl.store(STATS + 2 * N + rows, inv_npos, mask=rmask)
        tl.store(STATS + 3 * N + rows, sig * inv_npos, mask=rmask)

    @triton.jit
    def _row_weights(STATS, GRAD, rows, rmask, N, SCALED: tl.constexpr = True):
        """``lse``, ``w = c/|P(i)|`` and ``g = c S_i`` of the rows (``c = grad / N``, d total / d mean; 1 unless
        ``SCALED``)."""
        c = tl.load(GRAD) / N if SCALED else 1.0
        lse = tl.load(STATS + N + rows, mask=rmask, other=0.0)
        w = tl.load(STATS + 2 * N + rows, mask=rmask, other=0.0) * c
        g = tl.load(STATS + 3 * N + rows, mask=rmask, other=0.0) * c
        return lse, w, g

    @triton.jit
    def _grad_rows_kernel(Q, K, YQ, YK, STATS, GRAD, DQ, N, M, D, inv_t, SPLITS, EXCLUDE_SELF: tl.constexpr,
                          PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                          BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr):
        """Programs (row tile, column chunk): ``dq / c`` of the rows from the chunk's columns, DQ[split, rows] (the
        split forward's stand-in for the fused forward's gradient)."""
        rows, rmask, yq, split, c_lo, c_hi = _row_program(YQ, N, M, SPLITS, BLOCK_M, BLOCK_N)
        lse, w, g = _row_weights(STATS, GRAD, rows, rmask, N, False)
        dims = tl.arange(0, BLOCK_D)
        dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        for n0 in range(c_lo, c_hi, BLOCK_N):
            cols, s, pos, neg = _column_tile(Q, K, yq, YK, rows, n0, N, c_hi, D, inv_t, EXCLUDE_SELF, PRECISION,
                                             BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_K)
            k = _load_rows(K, cols, c_hi, dims, D)  # (BN, BD)
            dq += tl.dot(_ds(s, pos, neg, lse, w, g), k, input_precision=PRECISION)  # (BM, BN) x (BN, BD)
        out = DQ + split * N * D + rows[:, None] * D + dims[None, :]
        tl.store(out, dq * inv_t, mask=rmask[:, None] & (dims[None, :] < D))

    @triton.jit
    def _grad_cols_kernel(Q, K, YQ, YK, STATS, GRAD, DQ, DK, N, M, D, inv_t, SPLITS, EXCLUDE_SELF: tl.constexpr,
                          PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                          BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr):
        """Programs (column tile, row chunk): ``dk`` of the columns from the chunk's rows, DK[split, cols]; with
        one set (EXCLUDE_SELF) chunk 0 adds the rows' gradient ``DQ`` (per unit of ``c``, as the forward wrote it),
        so DK sums to the whole gradient."""
        cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        split = tl.program_id(1)
        dims = tl.arange(0, BLOCK_D)
        chunk = _chunk(N, BLOCK_M, SPLITS)
        r_lo = split * chunk
        r_hi = tl.minimum(r_lo + chunk, N)
        yk = tl.load(YK + cols, mask=cols < M, other=-1)
        dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
        for m0 in range(r_lo, r_hi, BLOCK_M):
            rows = m0 + tl.arange(0, BLOCK_M)
            rmask = rows < r_hi
            yq = tl.load(YQ + rows, mask=rmask, other=-1)
            s, pos, neg = _tile(Q, K, yq, yk, rows, cols, r_hi, M, D, inv_t, EXCLUDE_SELF, PRECISION, BLOCK_M,
                                BLOCK_N, BLOCK_D, BLOCK_K)
            lse, w, g = _row_weights(STATS, GRAD, rows, rmask, N)
            q = _load_rows(Q, rows, r_hi, dims, D)  # (BM, BD)
            dk += tl.dot(tl.trans(_ds(s, pos, neg, lse, w, g)), q, input_precision=PRECISION)  # (BN, BM) x (BM, BD)
        out = dk * inv_t
        cmask = (cols[:, None] < M) & (dims[None, :] < D)
        if EXCLUDE_SELF:  # rows and columns are one set: return one gradient, d/dq + d/dk
            out += tl.load(DQ + cols[:, None] * D + dims[None, :], mask=cmask & (split == 0), other=0.0) * (
                tl.load(GRAD) / N)
        tl.store(DK + split * M * D + cols[:, None] * D + dims[None, :], out, mask=cmask)


def _configs(d: int, kernel: str) -> list[dict[str, int]]:
    """Tile shapes to try for ``kernel``, fastest first (the whole embedding, padded to a power of two, per tile).

    For 64-, 128- and 256-d embeddings the first shapes are ones ptxas compiles without register spills for sm_90
    (checked ahead of time on a CPU machine, see ``tests/losses/test_infonce_triton.py``): products over 32-wide
    slices of the embedding, and narrow tiles for the kernels that accumulate whole gradient rows (16-wide slices
    where the forward also accumulates them). A shape is ``(BLOCK_M, BLOCK_N, num_warps, num_stages[, BLOCK_K])``.
    """
    block_d = max(16, triton.next_power_of_2(d))
    wide = block_d > 128
    if _INTERPRET:
        return [{"BLOCK_M": 64, "BLOCK_N": 32 if wide else 64, "BLOCK_D": block_d, "BLOCK_K": min(16, block_d)}]
    if not wide:  # up to 128-d
        first = {"grad_rows": (64, 32, 4, 2), "forward_grad": (16, 32, 8, 1), "grad_cols": (32, 32, 8, 1)}
        tiles = [first.get(kernel, (64, 64, 8, 2)), (32, 32, 4, 1), (16, 16, 4, 1)]
    elif kernel == "grad_rows":  # (BM, BN): BM rows accumulate dq (BM x 256)
        tiles = [(32, 16, 8, 1), (32, 32, 8, 1), (16, 16, 4, 1)]
    elif kernel == "forward_grad":  # the forward with dq: 32-wide slices spill (ptxas: 44 bytes)
        tiles = [(32, 16, 8, 1, 16), (16, 16, 4, 1, 16)]
    elif kernel == "grad_cols":  # BN columns accumulate dk (BN x 256)
        tiles = [(16, 32, 8, 1), (32, 16, 8, 1), (16, 16, 4, 1)]
    else:  # forward passes: the 172 KB of the first shape fit an H100, the second an A100 (163 KiB)
        tiles = [(64, 32, 8, 2), (64, 32, 8, 1), (32, 32, 4, 1), (16, 16, 4, 1)]
    return [{"BLOCK_M": t[0], "BLOCK_N": t[1], "BLOCK_D": block_d, "BLOCK_K": min(t[4] if len(t) > 4 else 32, block_d),
             "num_warps": t[2], "num_stages": t[3]} for t in tiles]


_CHOSEN: dict[tuple[str, int, bool], dict[str, int]] = {}  # the first tile shape that fits, per kernel and width

SPLIT = False
"""Split the column loop of a row tile (and the row loop of a column tile) across programs when a term has too few
tiles to fill the GPU (a 792-row term has 13 row tiles for an H100's 132 SMs). Tested (values and gradients),
but not yet timed on a GPU, so off by default: ``benchmarks.infonce_kernels --split`` compares it."""
TARGET_PROGRAMS: int | None = None  # programs per launch the split aims at; None: twice the device's SMs


def _splits(device: torch.device, parallel: int, parallel_block: int, loop: int, loop_block: int) -> int:
    """Chunks to cut a kernel's loop into, so that ``tiles x chunks`` approaches ``TARGET_PROGRAMS``."""
    if not SPLIT:
        return 1
    target = TARGET_PROGRAMS or (4 if _INTERPRET else 2 * torch.cuda.get_device_properties(device).multi_processor_count)
    return max(1, min(triton.cdiv(loop, loop_block), target // triton.cdiv(parallel, parallel_block)))


def _launch(name: str, kernel: Any, grid: Any, d: int, *args: Any, exclude_self: bool, **meta: Any) -> None:
    """Launch ``kernel`` on ``grid(tile_config)`` with the first tile shape that fits the device.

    The shared memory a tile shape needs depends on the compiler and the device (an H100 has 227 KiB per block,
    an A100 163 KiB, consumer cards less), so shapes are tried fastest first and the first that loads is kept.
    A shape that does not fit fails before the kernel runs, so retrying is safe.
    """
    key = (name, d, exclude_self)
    candidates = [_CHOSEN[key]] if key in _CHOSEN else _configs(d, name)
    for i, cfg in enumerate(candidates):
        try:
            kernel[grid(cfg)](*args, EXCLUDE_SELF=exclude_self, PRECISION=PRECISION, **meta, **cfg)
        except OutOfResources:
            if i == len(candidates) - 1:
                raise
            continue
        _CHOSEN[key] = cfg
        return


class _TritonInfoNCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, z_rows: Tensor, y_rows: Tensor, z_cols: Tensor, y_cols: Tensor,  # type: ignore[override]
                inv_t: float, exclude_self: bool, with_grad: bool) -> Tensor:
        n, d = z_rows.shape
        m = z_cols.shape[0]
        device = z_rows.device
        stats = torch.empty(4, n, dtype=torch.float32, device=device)  # loss_i, lse_i, 1/|P(i)|, S_i
        inputs = (z_rows, z_cols, y_rows, y_cols)
        splits = _splits(device, n, 64, m, 32)
        dq = None  # the rows' gradient per unit of grad / N, when the forward computes it
        if splits == 1:
            dq = torch.empty(n, d, dtype=torch.float32, device=device) if with_grad else None
            _launch("forward_grad" if with_grad else "forward", _forward_kernel,
                    lambda c: (triton.cdiv(n, c["BLOCK_M"]),), d, *inputs, stats, stats if dq is None else dq,
                    n, m, d, inv_t, exclude_self=exclude_self, WITH_GRAD=with_grad)
        else:
            part = torch.empty(5, splits, n, dtype=torch.float32, device=device)  # max, sum; loss, sig, npos
            ranges = torch.empty(2, splits, n, dtype=torch.int32, device=device)  # columns holding positives
            grid = lambda c: (triton.cdiv(n, c["BLOCK_M"]), splits)  # noqa: E731
            _launch("lse_split", _lse_split_kernel, grid, d, *inputs, part, ranges, n, m, d, inv_t, splits,
                    exclude_self=exclude_self)
            _launch("loss_split", _loss_split_kernel, grid, d, *inputs, stats, part, ranges, n, m, d, inv_t, splits,
                    exclude_self=exclude_self)
            _finalize_kernel[(triton.cdiv(n, 256),)](stats, part, n, splits, BLOCK=256)
        ctx.save_for_backward(z_rows, y_rows, z_cols, y_cols, stats, dq)
        ctx.inv_t, ctx.exclude_self = inv_t, exclude_self
        return stats[0].mean()

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        z_rows, y_rows, z_cols, y_cols, stats, dq = ctx.saved_tensors
        n, d = z_rows.shape
        m = z_cols.shape[0]
        device = z_rows.device
        grad = grad_out.float().contiguous()  # a 0-d tensor read by the kernels: no host sync
        args = (z_rows, z_cols, y_rows, y_cols, stats, grad)
        if dq is None:  # the split forward leaves the rows' gradient (per unit of grad / N) to this kernel
            row_splits = _splits(device, n, 64, m, 32)
            dq = torch.empty(row_splits, n, d, dtype=torch.float32, device=device)  # (splits, N, D) partial sums
            _launch("grad_rows", _grad_rows_kernel, lambda c: (triton.cdiv(n, c["BLOCK_M"]), row_splits), d, *args,
                    dq, n, m, d, ctx.inv_t, row_splits, exclude_self=ctx.exclude_self)
            dq = dq[0] if row_splits == 1 else dq.sum(0)  # (splits, N, D) -> (N, D)
        col_splits = _splits(device, m, 32, n, 64)
        dk = torch.empty(col_splits, m, d, dtype=torch.float32, device=device)
        _launch("grad_cols", _grad_cols_kernel, lambda c: (triton.cdiv(m, c["BLOCK_N"]), col_splits), d, *args,
                dq, dk, n, m, d, ctx.inv_t, col_splits, exclude_self=ctx.exclude_self)
        dk = dk[0] if col_splits == 1 else dk.sum(0)  # (splits, M, D) -> (M, D)
        if ctx.exclude_self:  # one set (z_rows is z_cols): the kernel added the rows' part, the whole gradient
            return dk, None, None, None, None, None, None
        return dq * (grad / n), None, dk, None, None, None, None


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
    # (ctx.needs_input_grad inside the forward says True under no_grad as well, so decide here.)
    with_grad = torch.is_grad_enabled() and (z_rows.requires_grad or z_cols.requires_grad)
    return _TritonInfoNCE.apply(z_rows, y_rows, z_cols, y_cols, 1.0 / temperature, exclude_self, with_grad)
