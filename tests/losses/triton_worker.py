"""Checks of the fused Triton InfoNCE run under Triton's CPU interpreter (``TRITON_INTERPRET=1`` must be set before
Triton is imported, so :mod:`tests.losses.test_infonce_triton` runs this file in a fresh process)."""

from __future__ import annotations

import torch

from contrastseg.losses import MultiScaleContrastiveLoss, supervised_infonce

from .reference import infonce_loops


def _compare(anchors, labels, contrast=None, contrast_labels=None, temperature=0.1):
    inputs = [anchors] + ([contrast] if contrast is not None else [])
    loss = supervised_infonce(anchors, labels, contrast, contrast_labels, temperature=temperature, backend="triton")
    ref = infonce_loops(anchors, labels, contrast, contrast_labels, temperature=temperature)
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # the forward without the rows' gradient (another kernel variant)
        value = supervised_infonce(anchors, labels, contrast, contrast_labels, temperature=temperature,
                                   backend="triton")
    torch.testing.assert_close(value, loss.detach(), rtol=1e-6, atol=0.0)
    for got, want in zip(torch.autograd.grad(loss, inputs), torch.autograd.grad(ref, inputs)):
        torch.testing.assert_close(got.double(), want.double(), rtol=1e-4, atol=1e-7)
    return loss


def equations() -> None:
    """Per-scale and cross-scale terms against the loops of Eq. 1-2: ragged tiles, odd widths, many classes."""
    g = torch.Generator().manual_seed(0)
    for n, d, classes in [(70, 16, 2), (100, 37, 7), (65, 256, 40), (5, 3, 2)]:  # 65 rows: a 1-row last tile
        _compare(torch.randn(n, d, generator=g).requires_grad_(), torch.randint(0, classes, (n,), generator=g))
    for n, m, d, t in [(30, 21, 8, 0.1), (70, 130, 20, 0.5)]:
        labels = torch.randint(0, 5, (n,), generator=g)
        contrast_labels = torch.randint(1, 6, (m,), generator=g)  # class 0 has no positive in the contrast set
        _compare(torch.randn(n, d, generator=g).requires_grad_(), labels,
                 torch.randn(m, d, generator=g).requires_grad_(), contrast_labels, temperature=t)
    # Anchors grouped by class, as the sampler gives them: pass 2 visits only the column tiles holding positives,
    # whose ranges here start and end inside tiles, include the last column and differ between row tiles.
    labels = torch.sort(torch.randint(0, 9, (150,), generator=g)).values
    labels[-3:] = 9
    _compare(torch.randn(150, 24, generator=g).requires_grad_(), labels)
    _compare(torch.randn(150, 24, generator=g).requires_grad_(), labels,
             torch.randn(97, 24, generator=g).requires_grad_(), torch.sort(torch.randint(2, 11, (97,), generator=g)).values)
    # Anchors without negatives (all one class but one anchor) and a temperature that overflows a naive exp.
    labels = torch.zeros(40, dtype=torch.long)
    labels[7] = 1
    _compare(torch.randn(40, 8, generator=g).requires_grad_(), labels)
    anchors = torch.randn(20, 4, generator=g).requires_grad_()
    loss = supervised_infonce(anchors, torch.randint(0, 3, (20,), generator=g), temperature=1e-4, backend="triton")
    (grad,) = torch.autograd.grad(loss, anchors)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()


def degenerate() -> None:
    """One class only: an exact, graph-connected zero with zero gradients."""
    anchors = torch.randn(33, 8, requires_grad=True)
    loss = supervised_infonce(anchors, torch.zeros(33, dtype=torch.long), backend="triton")
    (grad,) = torch.autograd.grad(loss, anchors)
    assert loss.item() == 0.0 and torch.count_nonzero(grad) == 0


def split_ranges() -> None:
    """The split forward's second pass visits only the columns holding a row tile's positives: a chunk without
    positives must not widen the range combined over the chunks."""
    import triton

    from contrastseg.losses import infonce_kernels

    n, splits, block_m = 256, 8, 64
    labels = torch.arange(n) // 32  # grouped by class, 32 anchors each: rows 0..63 hold positives in columns 0..63
    z = torch.nn.functional.normalize(torch.randn(n, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    part = torch.empty(5, splits, n)
    ranges = torch.empty(2, splits, n, dtype=torch.int32)
    infonce_kernels._lse_split_kernel[(triton.cdiv(n, block_m), splits)](
        z, z, labels, labels, part, ranges, n, n, 16, 10.0, splits, EXCLUDE_SELF=True, PRECISION="tf32x3",
        BLOCK_M=block_m, BLOCK_N=32, BLOCK_D=16, BLOCK_K=16)
    for tile in range(n // block_m):  # as _loss_split_kernel combines them: min of the starts, max of the ends
        rows = slice(tile * block_m, (tile + 1) * block_m)
        assert (int(ranges[0, :, rows].min()), int(ranges[1, :, rows].max())) == (tile * 64, tile * 64 + 64)


def low_precision_rows() -> None:
    """Unit rows given in bfloat16 (``normalized=True``) are computed in float32, as the PyTorch path does."""
    from contrastseg.losses.infonce import l2_normalize

    g = torch.Generator().manual_seed(2)
    rows = l2_normalize(torch.randn(40, 16, generator=g)).bfloat16()
    labels = torch.randint(0, 3, (40,), generator=g)
    got = supervised_infonce(rows, labels, normalized=True, backend="triton")
    want = supervised_infonce(rows.float(), labels, normalized=True, backend="torch")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def detached_sets() -> None:
    """Two sets, one of them detached (a memory bank): its gradient kernel is not launched, the other's gradient
    is exact."""
    from contrastseg.losses import infonce_triton

    g = torch.Generator().manual_seed(3)
    rows, cols = torch.randn(50, 8, generator=g), torch.randn(40, 8, generator=g)
    labels, contrast_labels = torch.randint(0, 4, (50,), generator=g), torch.randint(0, 4, (40,), generator=g)
    launched = []
    launch = infonce_triton._launch
    infonce_triton._launch = lambda name, *a, **k: launched.append(name) or launch(name, *a, **k)
    try:
        for grad_rows in (True, False):
            a, b = rows.clone().requires_grad_(grad_rows), cols.clone().requires_grad_(not grad_rows)
            launched.clear()
            loss = supervised_infonce(a, labels, b, contrast_labels, backend="triton")
            (got,) = torch.autograd.grad(loss, a if grad_rows else b)
            ref = infonce_loops(a, labels, b, contrast_labels)
            (want,) = torch.autograd.grad(ref, a if grad_rows else b)
            torch.testing.assert_close(got.double(), want.double(), rtol=1e-4, atol=1e-7)
            assert ("grad_cols" in launched) != grad_rows, launched
            assert "grad_rows" not in launched, launched  # the forward computes it when the rows need it
    finally:
        infonce_triton._launch = launch


def multiscale() -> None:
    """The whole Eq. 3 + 4 loss: Triton and PyTorch backends agree on values and gradients (same anchors)."""
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 6, (2, 64, 96), generator=g)
    labels[0, :20] = 255
    emb = [torch.randn(2, 24, 64 // s, 96 // s, generator=g) for s in (4, 8, 16, 32)]
    results = []
    for backend in ("torch", "triton"):
        inputs = [e.clone().requires_grad_() for e in emb]
        out = MultiScaleContrastiveLoss(backend=backend, min_views_per_class=2)(
            inputs, labels, generator=torch.Generator().manual_seed(0))
        results.append((out, torch.autograd.grad(out.total, inputs)))
    (ref, ref_grads), (got, grads) = results
    torch.testing.assert_close(torch.stack(got.per_scale + got.cross_scale),
                               torch.stack(ref.per_scale + ref.cross_scale), rtol=1e-5, atol=1e-6)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


if __name__ == "__main__":
    from contrastseg.losses import infonce_triton

    for split, programs in [(False, None), (True, 8), (True, 64)]:  # 64: more chunks than tiles, some empty
        infonce_triton.SPLIT, infonce_triton.TARGET_PROGRAMS = split, programs
        equations()
        degenerate()
        multiscale()
        if not split:
            detached_sets()
    # The tile shapes a GPU compiles first (the interpreter's default is one shape for all): same results.
    interpreter_configs = infonce_triton._configs

    def gpu_first(d: int, kernel: str) -> list[dict]:
        infonce_triton._INTERPRET = False
        try:
            return interpreter_configs(d, kernel)[:1]
        finally:
            infonce_triton._INTERPRET = True

    infonce_triton._configs = gpu_first
    for split, programs in [(False, None), (True, 8)]:
        infonce_triton.SPLIT, infonce_triton.TARGET_PROGRAMS = split, programs
        infonce_triton._CHOSEN.clear()
        equations()
    infonce_triton._configs, infonce_triton.SPLIT = interpreter_configs, False
    infonce_triton._CHOSEN.clear()
    split_ranges()
    low_precision_rows()
    assert infonce_triton._self_test(torch.device("cpu")), "the first-use check passes on working kernels"
    with torch.inference_mode():  # also when the first call comes from an evaluation
        assert infonce_triton._self_test(torch.device("cpu"))
    print("triton interpreter checks passed")
