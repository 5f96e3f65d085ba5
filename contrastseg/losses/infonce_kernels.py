"""Triton kernels of the fused supervised InfoNCE (Eq. 1-2), launched by :mod:`contrastseg.losses.infonce_triton`.

Per row ``i`` (``lse_i`` = log-sum-exp of ``s_in`` over the negatives ``N(i)``, ``-inf`` when there are none),
with ``dL/ds_ij = c * (S_i softmax_{N(i)}(s_i)_j - sigmoid(lse_i - s_ij) / |P(i)| [j in P(i)])``, ``c = grad / N``:

* forward, pass 1 over the columns: ``lse_i`` (online, as in flash attention) and, for the gradient,
  ``sum_{n in N(i)} softmax_{N(i)}(s_i)_n k_n`` (online too);
* forward, pass 2, over the column tiles that hold the row tile's positives (found in pass 1; a few tiles, as the
  sampler groups anchors by class): ``L_i = 1/|P(i)| sum_{j in P(i)} softplus(lse_i - s_ij)``,
  ``S_i = 1/|P(i)| sum_{j in P(i)} sigmoid(lse_i - s_ij)`` and ``sum_{j in P(i)} sigmoid(lse_i - s_ij) k_j``, which
  complete ``dq / c``: the rows' gradient is done when the forward is, except for the factor ``c``;
* backward: one kernel accumulates ``dk = dS^T q / t`` over row tiles (no atomics, so it is deterministic).

With :data:`~contrastseg.losses.infonce_triton.SPLIT`, a term with few tiles cuts those loops into chunks run by
separate programs (partial log-sum-exps combined as in split-K attention, partial gradients summed), to fill the
GPU; the rows' gradient then comes from a backward kernel of its own.
"""

from __future__ import annotations

import triton
import triton.language as tl

# Every kernel below takes float32 unit rows Q (N, D) and K (M, D), int64 labels YQ and YK, and the temperature as
# ``inv_t``; ``EXCLUDE_SELF`` marks one set (rows = columns, an anchor is not its own positive), ``PRECISION`` is
# the tl.dot input precision, and the BLOCK_* constants are the tile shape chosen in infonce_triton._configs.


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
    # A chunk without positives stores the empty range (M, 0), which the min / max over chunks ignore (its own
    # empty marker, (c_hi, c_lo), would widen the combined range to the chunk's bounds).
    has_pos = p_hi > p_lo
    tl.store(RANGE + split * N + rows, tl.where(has_pos, p_lo, M), mask=rmask)
    tl.store(RANGE + (SPLITS + split) * N + rows, tl.where(has_pos, p_hi, 0), mask=rmask)


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
