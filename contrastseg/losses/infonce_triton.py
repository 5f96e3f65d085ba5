"""Fused Triton kernels for the supervised InfoNCE of Eq. 1-2 (the CUDA path of :func:`supervised_infonce`).

Why our own kernels: at the paper's anchor counts the PyTorch formulation in
:mod:`contrastseg.losses.infonce_torch` is bound by kernel launches (about 25 per term) and, for ADE20K-sized anchor
sets, by memory traffic over the ``N x M`` similarities (each elementwise step reads and writes them). These kernels compute the same quantities
the way flash attention does: tiles of ``s = z_i . z_j / t`` live in registers and are never written to memory,
and one term costs two launches: the forward, which also computes the rows' gradient when one is needed, and one
backward kernel for the columns' gradient.

The kernels and the per-row formulas they compute are in :mod:`contrastseg.losses.infonce_kernels`.

The matrix products use ``tf32x3`` (three TF32 tensor-core products, float32 accuracy to about 1e-6): full IEEE
float32 products on CUDA cores would be several times slower, plain TF32 has a 1e-3 relative error.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any

import torch
from torch import Tensor

from contrastseg.losses.infonce_torch import blockwise_infonce, check_first_order, l2_normalize

try:  # Triton ships with PyTorch's CUDA wheels on Linux; without it the PyTorch path is used.
    import triton
    from triton.runtime.errors import OutOfResources

    from contrastseg.losses import infonce_kernels as kernels
except ImportError:  # pragma: no cover - depends on the installation
    triton = kernels = None

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
        with torch.inference_mode(False), torch.enable_grad(), _on(device):  # the first call may come from an eval
            _compare_with_pytorch(device)
    except Exception as err:  # any failure means: do not use the kernels on this device
        warnings.warn(f"contrastseg: the Triton InfoNCE kernels failed their check on {device} "
                      f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); the contrastive loss "
                      "uses the PyTorch path (backend='torch') instead", RuntimeWarning, stacklevel=3)
        return False
    return True


def _on(device: torch.device) -> Any:
    """Make ``device`` current: Triton launches on the current CUDA device and its current stream, which need not
    be the tensors' (one process driving several GPUs without ``set_device``)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _compare_with_pytorch(device: torch.device) -> None:
    """Raise unless both backends agree on a per-scale and a cross-scale term (80 anchors, 256-d, 3 classes)."""
    g = torch.Generator(device=device).manual_seed(0)
    z = torch.randn(80, 256, device=device, generator=g)
    y = torch.randint(0, 3, (80,), device=device, generator=g)
    results = []
    for fused in (False, True):
        x = z.clone().requires_grad_()
        u = l2_normalize(x)
        term = triton_infonce if fused else blockwise_infonce
        # one set (per-scale term) and two sets (cross-scale term)
        loss = (term(u, y, u, y, temperature=0.1, exclude_self=True)
                + term(u[:50], y[:50], u[50:], y[50:], temperature=0.1, exclude_self=False))
        results.append((loss.detach(), torch.autograd.grad(loss, x)[0]))
    (ref, ref_grad), (got, got_grad) = results
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_grad, ref_grad, rtol=1e-3, atol=1e-6)


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


# The first tile shape that fits, per kernel, width and device (shared memory differs between GPUs).
_CHOSEN: dict[tuple[str, int, bool, int | None], dict[str, int]] = {}

SPLIT = False
"""Split the column loop of a row tile (and the row loop of a column tile) across programs when a term has too few
tiles to fill the GPU (a 792-row term has 13 row tiles for an H100's 132 SMs). Tested (values and gradients),
but not yet timed on a GPU, so off by default: ``contrastseg.benchmarks.infonce_kernels --split`` compares it."""
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
    key = (name, d, exclude_self, torch.cuda.current_device() if torch.cuda.is_available() else None)
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
        with _on(z_rows.device):
            return _TritonInfoNCE._forward(ctx, z_rows, y_rows, z_cols, y_cols, inv_t, exclude_self, with_grad)

    @staticmethod
    def _forward(ctx: Any, z_rows: Tensor, y_rows: Tensor, z_cols: Tensor, y_cols: Tensor, inv_t: float,
                 exclude_self: bool, with_grad: bool) -> Tensor:
        n, d = z_rows.shape
        m = z_cols.shape[0]
        device = z_rows.device
        stats = torch.empty(4, n, dtype=torch.float32, device=device)  # loss_i, lse_i, 1/|P(i)|, S_i
        inputs = (z_rows, z_cols, y_rows, y_cols)
        splits = _splits(device, n, 64, m, 32)
        dq = None  # the rows' gradient per unit of grad / N, when the forward computes it
        if splits == 1:
            dq = torch.empty(n, d, dtype=torch.float32, device=device) if with_grad else None
            _launch("forward_grad" if with_grad else "forward", kernels._forward_kernel,
                    lambda c: (triton.cdiv(n, c["BLOCK_M"]),), d, *inputs, stats, stats if dq is None else dq,
                    n, m, d, inv_t, exclude_self=exclude_self, WITH_GRAD=with_grad)
        else:
            part = torch.empty(5, splits, n, dtype=torch.float32, device=device)  # max, sum; loss, sig, npos
            ranges = torch.empty(2, splits, n, dtype=torch.int32, device=device)  # columns holding positives
            grid = lambda c: (triton.cdiv(n, c["BLOCK_M"]), splits)  # noqa: E731
            _launch("lse_split", kernels._lse_split_kernel, grid, d, *inputs, part, ranges, n, m, d, inv_t,
                    splits, exclude_self=exclude_self)
            _launch("loss_split", kernels._loss_split_kernel, grid, d, *inputs, stats, part, ranges, n, m, d,
                    inv_t, splits, exclude_self=exclude_self)
            kernels._finalize_kernel[(triton.cdiv(n, 256),)](stats, part, n, splits, BLOCK=256)
        ctx.save_for_backward(z_rows, y_rows, z_cols, y_cols, stats, dq)
        ctx.inv_t, ctx.exclude_self = inv_t, exclude_self
        return stats[0].mean()

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        check_first_order()  # the kernels' gradient is not differentiable again: an error, not a wrong result
        with _on(grad_out.device):
            return _TritonInfoNCE._backward(ctx, grad_out)

    @staticmethod
    def _backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        z_rows, y_rows, z_cols, y_cols, stats, dq = ctx.saved_tensors
        n, d = z_rows.shape
        m = z_cols.shape[0]
        device = z_rows.device
        grad = grad_out.float().contiguous()  # a 0-d tensor read by the kernels: no host sync
        args = (z_rows, z_cols, y_rows, y_cols, stats, grad)
        # With two sets, either may be detached (a memory bank, a fixed set of prototypes): skip its kernel.
        need_rows = ctx.exclude_self or ctx.needs_input_grad[0]
        need_cols = ctx.exclude_self or ctx.needs_input_grad[2]
        if dq is None and need_rows:  # the split forward leaves the rows' gradient (per unit of grad / N) to this kernel
            row_splits = _splits(device, n, 64, m, 32)
            dq = torch.empty(row_splits, n, d, dtype=torch.float32, device=device)  # (splits, N, D) partial sums
            _launch("grad_rows", kernels._grad_rows_kernel, lambda c: (triton.cdiv(n, c["BLOCK_M"]), row_splits), d,
                    *args, dq, n, m, d, ctx.inv_t, row_splits, exclude_self=ctx.exclude_self)
            dq = dq[0] if row_splits == 1 else dq.sum(0)  # (splits, N, D) -> (N, D)
        dk = None
        if need_cols:
            col_splits = _splits(device, m, 32, n, 64)
            dk = torch.empty(col_splits, m, d, dtype=torch.float32, device=device)
            _launch("grad_cols", kernels._grad_cols_kernel, lambda c: (triton.cdiv(m, c["BLOCK_N"]), col_splits),
                    d, *args, stats if dq is None else dq, dk, n, m, d, ctx.inv_t, col_splits,
                    exclude_self=ctx.exclude_self)  # (DQ is read only with one set)
            dk = dk[0] if col_splits == 1 else dk.sum(0)  # (splits, M, D) -> (M, D)
        if ctx.exclude_self:  # one set (z_rows is z_cols): the kernel added the rows' part, the whole gradient
            return dk, None, None, None, None, None, None
        return None if dq is None else dq * (grad / n), None, dk, None, None, None, None


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
    z_rows, z_cols = z_rows.float().contiguous(), z_cols.float().contiguous()  # no copy for float32 rows
    y_rows, y_cols = y_rows.contiguous(), y_cols.contiguous()
    # The forward computes the rows' gradient when the rows need one. (ctx.needs_input_grad inside the forward
    # says True under no_grad as well, so decide here.)
    with_grad = torch.is_grad_enabled() and z_rows.requires_grad
    return _TritonInfoNCE.apply(z_rows, y_rows, z_cols, y_cols, 1.0 / temperature, exclude_self, with_grad)
