"""Supervised InfoNCE of paper Eq. 1-2, exact, in float32, without storing the N x M similarity for autograd.

For anchor ``i`` with positives ``P(i)`` (same class, not ``i`` itself) and negatives ``N(i)`` (other classes),

    L_i = 1/|P(i)| * sum_{j in P(i)} -log( e^{s_ij} / (e^{s_ij} + sum_{n in N(i)} e^{s_in}) ),   s = z.z' / t

and the loss is the mean of ``L_i`` over all anchors (an anchor without positives contributes 0). With
``lse_i = logsumexp_{n in N(i)} s_in`` every pair term is ``softplus(lse_i - s_ij)``: stable for any
temperature, and exactly 0 when ``N(i)`` is empty. The gradient with respect to the similarities is closed-form,

    dL/ds_ij = -g_ij  for j in P(i),   dL/ds_in = (sum_j g_ij) * softmax_{N(i)}(s_i)_n  for n in N(i),
    g_ij = sigmoid(lse_i - s_ij) / (|A| |P(i)|),

so a custom autograd function processes row blocks forward and recomputes them backward, the way
memory-efficient attention does: memory is ``O(block x M)`` instead of ``O(N x M)`` kept for autograd. On CUDA the
same formulas run as fused Triton kernels (:mod:`contrastseg.losses.infonce_triton`): two launches per term and
no similarity matrix in memory at all.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastseg.losses import infonce_triton
from contrastseg.losses.checks import check_temperature

__all__ = ["l2_normalize", "resolve_backend", "supervised_infonce"]

_BLOCK_ELEMENTS = 1 << 23  # similarity entries per row block (32 MiB of float32 per temporary)
# backend="auto" runs a term on the Triton kernels up to this many similarities (N x M), the PyTorch path above.
# Measured per term on an H100 (benchmarks/infonce_kernels.py, 256-d): Triton is faster up to 815 x 815 (0.66M,
# 1.37 against 1.69 ms), PyTorch's cuBLAS products from 1690 x 1690 (2.9M, 2.13 against 2.64 ms) upwards; the
# kernels run one program per 64 rows, which leaves most of the GPU idle on large sets.
TRITON_MAX_SIMILARITIES = 1_500_000
BACKENDS = ("auto", "triton", "torch")
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


def supervised_infonce(
    anchors: Tensor,
    labels: Tensor,
    contrast: Tensor | None = None,
    contrast_labels: Tensor | None = None,
    *,
    temperature: float = 0.1,
    block_elements: int = _BLOCK_ELEMENTS,
    normalized: bool = False,
    backend: str = "auto",
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
        normalized: the inputs are already float32 unit rows (:func:`l2_normalize`), as when one anchor set
            serves several terms; skips normalising them again.
        backend: ``"triton"`` (fused kernels, CUDA), ``"torch"`` (blockwise PyTorch, any device) or ``"auto"``
            (Triton where available, for terms up to ``TRITON_MAX_SIMILARITIES`` similarities, where it is faster).

    Returns:
        Scalar loss, mean over anchors. An exact, graph-connected 0 when there are no anchors, no contrast
        samples, no positives or no negatives (for example a single class), so every parameter still receives
        a (zero) gradient.

    Raises:
        ValueError: shapes other than ``(N, D)``, ``(N,)``, ``(M, D)``, ``(M,)`` (an ``(N, 1)`` label column would
            broadcast into a wrong mask), ``contrast`` without ``contrast_labels``, or a temperature that is not a
            positive finite number.
    """
    if (contrast is None) != (contrast_labels is None):
        raise ValueError("give contrast and contrast_labels together")
    check_temperature(temperature)
    _check_set(anchors, labels, "anchors", "labels", "N")
    if contrast is not None:
        if contrast.dim() != 2 or contrast.shape[1] != anchors.shape[1]:
            raise ValueError(f"contrast must be (M, D) with anchors' D={anchors.shape[1]}, got shape "
                             f"{tuple(contrast.shape)}")
        _check_set(contrast, contrast_labels, "contrast", "contrast_labels", "M")
    use_triton = resolve_backend(backend, anchors.device) == "triton"
    exclude_self = contrast is None
    with torch.autocast(anchors.device.type, enabled=False):
        if anchors.shape[0] == 0 or (contrast is not None and contrast.shape[0] == 0):
            zero = anchors.reshape(-1)[:0].float().sum()  # graph-connected exact 0
            return zero if contrast is None else zero + contrast.reshape(-1)[:0].float().sum()
        z_rows = anchors if normalized else l2_normalize(anchors)
        z_cols = z_rows if contrast is None else (contrast if normalized else l2_normalize(contrast))
        y_cols = labels if contrast_labels is None else contrast_labels
        if use_triton and (backend == "triton" or z_rows.shape[0] * z_cols.shape[0] <= TRITON_MAX_SIMILARITIES):
            return infonce_triton.triton_infonce(z_rows, labels, z_cols, y_cols, temperature=temperature,
                                                 exclude_self=exclude_self)
        block = max(1, min(z_rows.shape[0], block_elements // max(1, z_cols.shape[0])))
        return _BlockwiseInfoNCE.apply(z_rows, labels, z_cols, y_cols, 1.0 / temperature, exclude_self, block)


def _check_set(z: Tensor, y: Tensor, z_name: str, y_name: str, n: str) -> None:
    """``z`` is ``(n, D)`` and ``y`` ``(n,)``, or a ``ValueError`` naming them and their shapes."""
    if z.dim() != 2:
        raise ValueError(f"{z_name} must be ({n}, D), got shape {tuple(z.shape)}")
    if y.shape != z.shape[:1]:
        raise ValueError(f"{y_name} must be ({n},) = ({z.shape[0]},) for {z_name} {tuple(z.shape)}, got "
                         f"{tuple(y.shape)}")


def check_backend(backend: str) -> None:
    """Raise ``ValueError`` unless ``backend`` is one of :data:`BACKENDS`."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be 'auto', 'triton' or 'torch', got {backend!r}")


def resolve_backend(backend: str, device: torch.device) -> str:
    """``"triton"`` or ``"torch"`` for ``backend`` on ``device``; a clear error for an impossible request.

    Args:
        backend: ``"auto"``, ``"triton"`` or ``"torch"``.
        device: where the embeddings are.
    """
    check_backend(backend)
    if backend == "auto":
        return "triton" if infonce_triton.available(device) else "torch"
    if backend == "triton" and not infonce_triton.available(device):
        raise RuntimeError(f"backend='triton' needs CUDA and the triton package (embeddings are on {device}, "
                           f"triton {'installed' if infonce_triton.triton is not None else 'not installed'}); "
                           "use backend='torch'")
    return backend
