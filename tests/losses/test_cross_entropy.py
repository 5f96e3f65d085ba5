import math

import pytest
import torch

from contrastseg.errors import ConfigError
from contrastseg.losses import CrossEntropy, LossContext, TermOutput
from contrastseg.models import SegOutput


def _term(**kw) -> CrossEntropy:
    term = CrossEntropy(**kw)
    term.bind(LossContext(num_classes=4, ignore_index=255))
    return term


def _reference(logits: torch.Tensor, target: torch.Tensor, weights=None) -> torch.Tensor:
    """Slow, obvious: loop over labelled pixels, weighted mean of -log softmax."""
    num, den = 0.0, 0.0
    logp = torch.log_softmax(logits.double(), dim=1)
    for b, i, j in zip(*torch.nonzero(target != 255, as_tuple=True)):
        c = int(target[b, i, j])
        w = 1.0 if weights is None else weights[c]
        num = num - w * logp[b, c, i, j]
        den += w
    return num / den


def _inputs():
    logits = torch.randn(2, 4, 5, 6, requires_grad=True)
    target = torch.randint(0, 4, (2, 5, 6))
    target[0, :2] = 255
    return logits, target


@pytest.mark.parametrize("weights", [None, [0.5, 1.0, 2.0, 3.0]])
def test_matches_reference(weights) -> None:
    logits, target = _inputs()
    loss = _term(class_weights=weights)(SegOutput(logits, None, []), target)
    ref = _reference(logits, target, weights)
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-6)
    (g,) = torch.autograd.grad(loss, logits)
    (g_ref,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(g.double(), g_ref.double(), rtol=1e-4, atol=1e-7)


def test_all_ignore_is_connected_zero() -> None:
    logits = torch.randn(2, 4, 5, 6, requires_grad=True)
    loss = _term()(SegOutput(logits, None, []), torch.full((2, 5, 6), 255))
    assert loss.item() == 0.0 and math.isfinite(loss.item())
    (g,) = torch.autograd.grad(loss, logits)
    assert torch.count_nonzero(g) == 0


def test_aux_logits_weighted() -> None:
    logits, target = _inputs()
    aux = torch.randn(2, 4, 5, 6)
    out = _term(aux_weight=0.4)(SegOutput(logits, aux, []), target)
    assert isinstance(out, TermOutput)
    torch.testing.assert_close(out.loss, out.logs["ce_main"] + 0.4 * out.logs["ce_aux"])
    torch.testing.assert_close(out.logs["ce_aux"].double(), _reference(aux, target), rtol=1e-5, atol=1e-6)


def test_class_weights_length_checked() -> None:
    with pytest.raises(ConfigError, match="class_weights has 2 entries but the data has 4 classes"):
        _term(class_weights=[1.0, 2.0])


@pytest.mark.parametrize("weights", [None, [0.5, 1.0, 2.0, 3.0]])
def test_low_resolution_logits_equal_upsampled(weights) -> None:
    low = torch.randn(3, 4, 6, 8, requires_grad=True)
    target = torch.randint(0, 4, (3, 24, 32))
    target[1, :5] = 255
    term = _term(class_weights=weights)
    loss = term(SegOutput(low, None, []), target)
    full = torch.nn.functional.interpolate(low, size=(24, 32), mode="bilinear", align_corners=False)
    ref = term(SegOutput(full, None, []), target)
    torch.testing.assert_close(loss, ref)
    (g,) = torch.autograd.grad(loss, low)
    (g_ref,) = torch.autograd.grad(ref, low)
    torch.testing.assert_close(g, g_ref)
