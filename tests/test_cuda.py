"""CUDA-only checks, skipped without a GPU: the loss on the device against the equations, the sampler's host
synchronisation, CUDA autocast (fp16 and bf16), and a short mixed-precision fit through the real entry point.

Run where a GPU is available: ``pytest tests/test_cuda.py``.
"""

from __future__ import annotations

import csv
import math
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from contrastseg.losses import MultiScaleContrastiveLoss, sample_balanced_anchors, supervised_infonce

from .losses.reference import infonce_loops
from .losses.test_contrastive_term import _bound, _features, _labels
from .losses.test_sampling import _imbalanced_labels, _spec_v

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("backend", ["torch", "triton", "triton-split"])
@pytest.mark.parametrize("cross", [False, True])
@pytest.mark.parametrize("dim", [32, 256])
@pytest.mark.parametrize("grouped", [False, True])  # True: labels grouped by class, as the sampler orders them
def test_infonce_on_cuda_matches_equation(cross: bool, backend: str, dim: int, grouped: bool, monkeypatch) -> None:
    from contrastseg.losses import infonce_triton

    monkeypatch.setattr(infonce_triton, "SPLIT", backend == "triton-split")
    backend = backend.removesuffix("-split")
    g = torch.Generator().manual_seed(0)
    anchors = torch.randn(300, dim, generator=g)
    labels = torch.randint(0, 7, (300,), generator=g)
    contrast = torch.randn(120, dim, generator=g) if cross else None
    contrast_labels = torch.randint(0, 7, (120,), generator=g) if cross else None
    if grouped:
        labels = labels.sort().values
        contrast_labels = contrast_labels.sort().values if cross else None
    inputs = [anchors] + ([contrast] if cross else [])
    cuda_inputs = [x.cuda().requires_grad_() for x in inputs]
    loss = supervised_infonce(cuda_inputs[0], labels.cuda(), cuda_inputs[1] if cross else None,
                              contrast_labels.cuda() if cross else None, backend=backend)
    ref_inputs = [x.double().requires_grad_() for x in inputs]
    ref = infonce_loops(ref_inputs[0], labels, ref_inputs[1] if cross else None, contrast_labels)
    torch.testing.assert_close(loss.double().cpu(), ref, rtol=1e-4, atol=1e-5)
    for got, want in zip(torch.autograd.grad(loss, cuda_inputs), torch.autograd.grad(ref, ref_inputs)):
        torch.testing.assert_close(got.double().cpu(), want, rtol=1e-3, atol=1e-6)
    with torch.no_grad():  # the Triton forward without the anchors' gradient is another kernel variant
        value = supervised_infonce(cuda_inputs[0], labels.cuda(), cuda_inputs[1] if cross else None,
                                   contrast_labels.cuda() if cross else None, backend=backend)
    torch.testing.assert_close(value, loss.detach(), rtol=1e-6, atol=1e-7)


def test_triton_and_torch_backends_agree_on_a_realistic_loss() -> None:
    """The whole Eq. 3 + 4 loss on Cityscapes-like labels (quarter size): same anchors, both backends."""
    from contrastseg.benchmarks.contrastive_loss import _inputs

    emb, labels = _inputs(("Cityscapes-like", 8, 512, 1024, 19), 0.5, "cuda")
    results = []
    for backend in ("torch", "triton"):
        inputs = [e.detach().clone().requires_grad_() for e in emb]
        out = MultiScaleContrastiveLoss(backend=backend)(
            inputs, labels, generator=torch.Generator(device="cuda").manual_seed(0))
        results.append((torch.stack(out.per_scale + out.cross_scale), torch.autograd.grad(out.total, inputs)))
    (ref, ref_grads), (got, grads) = results
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-7)


def test_contrastive_term_after_prepare_never_synchronises() -> None:
    """Anchors drawn before the forward pass: the term's forward and backward leave the device queue alone."""
    from .losses.test_contrastive_term import _module

    module = _module().cuda().train()
    image, labels = torch.randn(2, 3, 128, 192, device="cuda"), _labels(h=128, w=192).cuda()
    term = module.losses[1]
    for _ in range(2):  # warm-up (first launches compile the kernels)
        term.prepare(labels)
        term(module(image), labels).loss.backward()
    term.prepare(labels)
    output = module(image)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            term(output, labels).loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [str(c.message) for c in caught if "synchroniz" in str(c.message).lower()]
    assert syncs == []


def test_presample_queues_the_draw_without_waiting_for_the_device() -> None:
    """presample() queues the draw and the copy of its size; the anchors equal a synchronous draw's."""
    from contrastseg.losses.sampling import sample_anchor_indices_multiscale

    labels = _imbalanced_labels(4, 128, 192, 19, seed=5).cuda()
    loss = MultiScaleContrastiveLoss()
    loss.presample(labels, strides=(4, 8, 16, 32)).pending.resolve()  # warm-up (pinned memory, kernels)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ahead = loss.presample(labels, strides=(4, 8, 16, 32), generator=torch.Generator("cuda").manual_seed(0))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert [str(c.message) for c in caught if "synchroniz" in str(c.message).lower()] == []
    now = sample_anchor_indices_multiscale([labels[:, ::s, ::s] for s in (4, 8, 16, 32)],
                                           generator=torch.Generator("cuda").manual_seed(0))
    for (index, anchor_labels), (want_index, want_labels) in zip(ahead.drawn.values(), now):
        assert torch.equal(index, want_index) and torch.equal(anchor_labels, want_labels) and len(index) > 0


def test_sampler_on_cuda_matches_specification_with_one_host_sync() -> None:
    labels = _imbalanced_labels(4, 48, 64, 19, seed=3)
    b, h, w = labels.shape
    ids = torch.arange(b * h * w, dtype=torch.float64).view(b, 1, h, w)
    ids, labels_cuda = ids.cuda(), labels.cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            anchors, anchor_labels = sample_balanced_anchors(
                ids, labels_cuda, generator=torch.Generator(device="cuda").manual_seed(0))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [str(c.message) for c in caught if "synchroniz" in str(c.message).lower()]
    assert len(syncs) <= 1, syncs  # only the one that sizes the output
    counts, v = _spec_v(labels)
    pix = anchors[:, 0].long().cpu()
    assert anchors.shape == (v * len(counts), 1) and len(pix.unique()) == len(pix)
    assert torch.equal(labels.flatten()[pix], anchor_labels.cpu())
    got: dict = {}
    for p, c in zip(pix.tolist(), anchor_labels.tolist()):
        got[(p // (h * w), c)] = got.get((p // (h * w), c), 0) + 1
    assert got == {k: v for k in counts}
    again, _ = sample_balanced_anchors(ids, labels_cuda, generator=torch.Generator(device="cuda").manual_seed(0))
    assert torch.equal(anchors, again), "a seeded CUDA generator reproduces the draw"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("all_ignore", [False, True])
def test_contrastive_term_under_cuda_autocast(dtype: torch.dtype, all_ignore: bool) -> None:
    term = _bound().cuda().eval()  # fixed BatchNorm statistics: both runs compute the same function
    feats = [f.cuda().requires_grad_() for f in _features()]
    labels = _labels().cuda()
    if all_ignore:
        labels[:] = 255
    out32 = term.loss(term.embed(feats), labels, generator=torch.Generator(device="cuda").manual_seed(0))
    with torch.autocast("cuda", dtype=dtype):
        emb = term.embed(feats)
        assert emb[0].dtype == dtype
        out = term.loss(emb, labels, generator=torch.Generator(device="cuda").manual_seed(0))
    assert out.total.dtype == torch.float32 and torch.isfinite(out.total)
    torch.testing.assert_close(out.total, out32.total, rtol=3e-2, atol=3e-2)
    grads = torch.autograd.grad(out.total, feats + list(term.parameters()), allow_unused=False)
    assert all(torch.isfinite(g).all() for g in grads)
    if all_ignore:
        assert out.total.item() == 0.0 and all((g == 0).all() for g in grads)


def test_full_shape_loss_fits_the_memory_target() -> None:
    """Cityscapes-like case of the benchmark (8 x 512 x 1024 labels, 19 classes): under 400 MB extra."""
    from contrastseg.benchmarks.contrastive_loss import _measure

    # The benchmark's own measurement: warm-up, then the peak above the inputs, less the embeddings' gradients
    # (which any loss on them creates).
    _, extra_mb, beyond_grads_mb = _measure("contrastseg", ("Cityscapes-like", 8, 512, 1024, 19), 1.0, "cuda", 1)
    assert beyond_grads_mb < 400, (extra_mb, beyond_grads_mb)


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_mixed_precision_fit_on_cuda(tmp_path: Path, precision: str) -> None:
    cmd = [sys.executable, "-m", "contrastseg", "fit", "--config", str(REPO / "experiments" / "quickstart_contrastive.yaml"),
           "--trainer.accelerator=gpu", "--trainer.devices=1", f"--trainer.precision={precision}",
           "--trainer.max_epochs=1", "--trainer.limit_train_batches=6", "--trainer.limit_val_batches=2",
           "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false",
           "--data.init_args.num_workers=2", f"--trainer.logger.init_args.save_dir={tmp_path}"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = list(csv.DictReader(next(tmp_path.rglob("metrics.csv")).open()))
    logged = [r for r in rows if r.get("train/loss")]
    assert len(logged) == 6
    for row in logged:
        for key in ("train/loss_ce", "train/loss_ms_s4", "train/loss_cs_4_32"):
            assert math.isfinite(float(row[key])), (key, row[key])
    assert any(r.get("val/mIoU") for r in rows)
