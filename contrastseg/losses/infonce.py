"""Supervised InfoNCE of paper Eq. 1-2, exact, in float32, without storing the N x M similarity for autograd.

For anchor ``i`` with positives ``P(i)`` (same class, not ``i`` itself) and negatives ``N(i)`` (other classes),

    L_i = 1/|P(i)| * sum_{j in P(i)} -log( e^{s_ij} / (e^{s_ij} + sum_{n in N(i)} e^{s_in}) ),   s = z.z' / t

and the loss is the mean of ``L_i`` over all anchors (an anchor without positives contributes 0). With
``lse_i = logsumexp_{n in N(i)} s_in`` every pair term is ``softplus(lse_i - s_ij)``: stable for any
temperature, and exactly 0 when ``N(i)`` is empty. The gradient with respect to the similarities is closed-form,

    dL/ds_ij = -g_ij  for j in P(i),   dL/ds_in = (sum_j g_ij) * softmax_{N(i)}(s_i)_n  for n in N(i),
    g_ij = sigmoid(lse_i - s_ij) / (|A| |P(i)|),

so a custom autograd function processes row blocks forward and recomputes them backward, the way
memory-efficient attention does: memory is ``O(block x M)`` instead of ``O(N x M)`` kept for autograd
(:mod:`contrastseg.losses.infonce_torch`). On CUDA the same formulas run as fused Triton kernels
(:mod:`contrastseg.losses.infonce_triton`): two launches per term and no similarity matrix in memory at all. This
module checks the inputs and chooses between the two.
"""

from __future__ import annotations

import torch
from torch import Tensor

from contrastseg.losses import infonce_triton
from contrastseg.losses.checks import check_temperature
from contrastseg.losses.infonce_torch import BLOCK_ELEMENTS, blockwise_infonce, l2_normalize

__all__ = ["l2_normalize", "resolve_backend", "supervised_infonce"]

# backend="auto" runs a term on the Triton kernels up to this many similarities (N x M), the PyTorch path above.
# Measured per term on an H100 (contrastseg/benchmarks/infonce_kernels.py, 256-d): Triton is faster up to
# 815 x 815 (0.66M, 1.37 against 1.69 ms), PyTorch's cuBLAS products from 1690 x 1690 (2.9M, 2.13 against 2.64 ms)
# upwards; the kernels run one program per 64 rows, which leaves most of the GPU idle on large sets.
TRITON_MAX_SIMILARITIES = 1_500_000
BACKENDS = ("auto", "triton", "torch")


def supervised_infonce(
    anchors: Tensor,
    labels: Tensor,
    contrast: Tensor | None = None,
    contrast_labels: Tensor | None = None,
    *,
    temperature: float = 0.1,
    block_elements: int = BLOCK_ELEMENTS,
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
        return blockwise_infonce(z_rows, labels, z_cols, y_cols, temperature=temperature, exclude_self=exclude_self,
                                 block_elements=block_elements)


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
