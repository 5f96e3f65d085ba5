"""OHEM cross-entropy against a loop over pixels following HRNet-OCR's rule."""

import math

import pytest
import torch
import torch.nn.functional as F

from contrastseg.losses import LossContext, OhemCrossEntropy, ohem_cross_entropy
from contrastseg.models import SegOutput


def _reference(logits, target, thresh, min_kept, weights=None):
    """Sort the labelled pixels' true-class probabilities; threshold = max(thresh, p[min(min_kept, n-1)])."""
    pixels = [(b, i, j) for b in range(target.shape[0]) for i in range(target.shape[1])
              for j in range(target.shape[2]) if target[b, i, j] != 255]
    probs = logits.softmax(1)
    p = sorted(float(probs[b, target[b, i, j], i, j]) for b, i, j in pixels)
    threshold = max(thresh, p[min(min_kept, len(p) - 1)])
    kept = [(b, i, j) for b, i, j in pixels if float(probs[b, target[b, i, j], i, j]) < threshold]
    logp = logits.log_softmax(1)
    terms = [-logp[b, target[b, i, j], i, j] * (1.0 if weights is None else weights[int(target[b, i, j])])
             for b, i, j in kept]
    return torch.stack(terms).sum() / len(kept)


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)).requires_grad_()
    target = torch.randint(0, 3, (2, 4, 5), generator=g)
    target[1, 0] = 255
    return logits, target


@pytest.mark.parametrize(("thresh", "min_kept"), [(0.7, 5), (0.7, 30), (0.2, 3), (0.99, 1000)])
def test_matches_reference(thresh, min_kept) -> None:
    logits, target = _inputs()
    loss = ohem_cross_entropy(logits, target, thresh=thresh, min_kept=min_kept)
    ref = _reference(logits, target, thresh, min_kept)
    assert torch.allclose(loss, ref, atol=1e-10)
    assert torch.allclose(torch.autograd.grad(loss, logits)[0], torch.autograd.grad(ref, logits)[0], atol=1e-10)


def test_class_weights_and_min_kept_above_the_pixel_count() -> None:
    logits, target = _inputs(1)
    weights = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64)
    loss = ohem_cross_entropy(logits, target, thresh=0.7, min_kept=10**6, class_weights=weights)
    # The per-pixel losses are weighted and averaged over the kept pixels (HRNet-OCR's OhemCrossEntropy).
    assert torch.allclose(loss, _reference(logits, target, 0.7, 10**6, weights), atol=1e-10)


def test_easy_pixels_are_dropped() -> None:
    target = torch.zeros(1, 1, 4, dtype=torch.long)
    logits = torch.tensor([[[[9.0, 9.0, 9.0, -2.0]], [[0.0, 0.0, 0.0, 0.0]]]])  # 3 confident, 1 hard pixel
    loss = ohem_cross_entropy(logits, target, thresh=0.7, min_kept=0)
    assert math.isclose(float(loss), float(-logits.log_softmax(1)[0, 0, 0, 3]), rel_tol=1e-6)


def test_all_ignore_is_a_connected_zero_and_the_term_wraps_it() -> None:
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    assert ohem_cross_entropy(logits, torch.full((1, 2, 2), 255)).item() == 0.0
    term = OhemCrossEntropy(thresh=0.7, min_kept=4, aux_weight=0.4)
    term.bind(LossContext(num_classes=3, ignore_index=255))
    lo, target = torch.randn(2, 3, 2, 3), torch.randint(0, 3, (2, 4, 6))
    out = term(SegOutput(lo, lo, []), target)
    assert set(out.logs) == {"ohem_main", "ohem_aux"} and torch.allclose(out.loss, out.logs["ohem_main"]
                                                                          + 0.4 * out.logs["ohem_aux"])


def test_auxiliary_logits_get_plain_cross_entropy() -> None:
    """HRNet-OCR trains ``0.4 CE(aux) + OHEM(main)``: the hard-pixel selection applies to the main head only."""
    term = OhemCrossEntropy(thresh=0.7, min_kept=2, aux_weight=0.4)
    term.bind(LossContext(num_classes=3, ignore_index=255))
    g = torch.Generator().manual_seed(0)
    main, aux = torch.randn(2, 3, 4, 6, generator=g) * 3, torch.randn(2, 3, 4, 6, generator=g) * 3
    target = torch.randint(0, 3, (2, 4, 6), generator=g)
    out = term(SegOutput(main, aux, []), target)
    assert torch.allclose(out.logs["ohem_main"], ohem_cross_entropy(main, target, thresh=0.7, min_kept=2))
    assert torch.allclose(out.logs["ohem_aux"], F.cross_entropy(aux, target))
    assert not torch.allclose(out.logs["ohem_aux"], ohem_cross_entropy(aux, target, thresh=0.7, min_kept=2))
