import math

import pytest
import torch

from contrastseg.losses import supervised_infonce

from .reference import infonce_dense, infonce_loops


def _check(anchors, labels, contrast=None, contrast_labels=None, **kw):
    inputs = [anchors] + ([contrast] if contrast is not None else [])
    loss = supervised_infonce(anchors, labels, contrast, contrast_labels, **kw)
    ref = infonce_loops(anchors, labels, contrast, contrast_labels, temperature=kw.get("temperature", 0.1))
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-6)
    grads = torch.autograd.grad(loss, inputs)
    ref_grads = torch.autograd.grad(ref, inputs)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g.double(), r.double(), rtol=1e-4, atol=1e-6)
    return loss


@pytest.mark.parametrize("classes", [2, 7, 40])
@pytest.mark.parametrize("block_elements", [1 << 24, 97])  # one block, and many ragged blocks
def test_per_scale_matches_equation(classes: int, block_elements: int) -> None:
    anchors = torch.randn(48, 16, requires_grad=True)
    labels = torch.randint(0, classes, (48,))
    _check(anchors, labels, block_elements=block_elements)


@pytest.mark.parametrize("temperature", [0.1, 0.5])
@pytest.mark.parametrize("block_elements", [1 << 24, 50])
def test_cross_scale_matches_equation(temperature: float, block_elements: int) -> None:
    anchors = torch.randn(30, 8, requires_grad=True)
    contrast = torch.randn(21, 8, requires_grad=True)
    labels = torch.randint(0, 5, (30,))
    contrast_labels = torch.randint(1, 6, (21,))  # class 0 has no positive in the contrast set
    _check(anchors, labels, contrast, contrast_labels, temperature=temperature, block_elements=block_elements)


def test_matches_dense_vectorised_form() -> None:
    anchors, labels = torch.randn(200, 32), torch.randint(0, 9, (200,))
    torch.testing.assert_close(supervised_infonce(anchors, labels), infonce_dense(anchors, labels), rtol=1e-5, atol=1e-5)


def test_extreme_similarities_are_finite() -> None:
    # Tiny temperature: logits of +-1e4 overflow a naive exp; the log-sum-exp form stays finite.
    anchors = torch.randn(20, 4, requires_grad=True)
    loss = supervised_infonce(anchors, torch.randint(0, 3, (20,)), temperature=1e-4)
    (g,) = torch.autograd.grad(loss, anchors)
    assert math.isfinite(loss.item()) and torch.isfinite(g).all()


@pytest.mark.parametrize("case", ["one_class", "no_anchors", "no_contrast", "single_anchor"])
def test_degenerate_inputs_give_connected_zero(case: str) -> None:
    anchors = torch.randn(10 if case != "single_anchor" else 1, 4, requires_grad=True)
    labels = torch.zeros(len(anchors), dtype=torch.long)
    if case == "no_anchors":
        anchors = torch.randn(0, 4, requires_grad=True)
        labels = labels[:0]
    args = (anchors, labels)
    if case == "no_contrast":
        args += (torch.randn(0, 4), torch.zeros(0, dtype=torch.long))
    loss = supervised_infonce(*args)
    assert loss.item() == 0.0
    (g,) = torch.autograd.grad(loss, anchors)
    assert g.shape == anchors.shape and torch.count_nonzero(g) == 0


def test_bf16_autocast_computes_in_float32() -> None:
    anchors, labels = torch.randn(64, 16), torch.randint(0, 4, (64,))
    ref = supervised_infonce(anchors, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = supervised_infonce(anchors.bfloat16(), labels)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, ref, rtol=2e-2, atol=2e-2)


def test_benchmark_baseline_matches_equation() -> None:
    anchors, labels = torch.randn(30, 8), torch.randint(0, 4, (30,))
    contrast, contrast_labels = torch.randn(20, 8), torch.randint(0, 4, (20,))
    torch.testing.assert_close(infonce_dense(anchors, labels).double(), infonce_loops(anchors, labels),
                               rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(infonce_dense(anchors, labels, contrast, contrast_labels).double(),
                               infonce_loops(anchors, labels, contrast, contrast_labels), rtol=1e-5, atol=1e-6)


def test_l2_normalize_matches_functional_normalize_with_a_zero_row() -> None:
    from contrastseg.losses.infonce import l2_normalize

    x = torch.randn(6, 5, dtype=torch.float32)
    x[2] = 0.0  # below eps: the map is x / eps
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    upstream = torch.randn(6, 5)
    ours, ref = l2_normalize(x1), torch.nn.functional.normalize(x2, dim=1)
    torch.testing.assert_close(ours, ref)
    (ours * upstream).sum().backward()
    (ref * upstream).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad)


def test_a_second_derivative_is_a_clear_error() -> None:
    """The closed-form backward is not itself differentiable: asking for a Hessian-vector product fails loudly
    instead of returning curvature without the InfoNCE part."""
    x = torch.randn(12, 4, requires_grad=True)
    loss = supervised_infonce(x, torch.arange(12) % 3, backend="torch")
    with pytest.raises(RuntimeError, match="second derivatives"):
        torch.autograd.grad(loss, x, create_graph=True)
