"""LovaszSoftmax against a direct evaluation of the Lovasz extension of the Jaccard loss (Berman et al. 2018)."""

import pytest
import torch

from contrastseg.losses import LossContext, LovaszSoftmax
from contrastseg.models import SegOutput


def _jaccard_loss(fg: set[int], mistakes: set[int]) -> float:
    """Delta_J(M) = 1 - |F \\ M| / |F u M| for the mispredicted set M of one class with foreground F."""
    union = fg | mistakes
    return 1.0 - len(fg - mistakes) / len(union) if union else 0.0


def _lovasz_reference(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over present classes of sum_i e_(i) (Delta(S_i) - Delta(S_{i-1})), errors sorted descending."""
    losses = []
    for c in sorted(set(labels.tolist())):
        fg_mask = labels == c
        errors = (fg_mask.double() - probs[:, c]).abs()
        order = sorted(range(len(errors)), key=lambda i: -float(errors[i].detach()))
        fg = {i for i in range(len(labels)) if fg_mask[i]}
        total, previous, chosen = 0.0, 0.0, set()
        for i in order:
            chosen.add(i)
            current = _jaccard_loss(fg, chosen)
            total = total + errors[i] * (current - previous)
            previous = current
        losses.append(total)
    return torch.stack([torch.as_tensor(v) for v in losses]).mean()


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 4, 3, 5, generator=g, dtype=torch.float64).requires_grad_()
    target = torch.randint(0, 4, (2, 3, 5), generator=g)
    target[0, 0] = 255
    target[1, :, :2] = 255
    return logits, target


def _term(**kw) -> LovaszSoftmax:
    term = LovaszSoftmax(**kw)
    term.bind(LossContext(num_classes=4, ignore_index=255))
    return term


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_the_lovasz_extension_with_ignore(seed) -> None:
    logits, target = _inputs(seed)
    loss = _term()(SegOutput(logits, None, []), target)
    valid = target != 255
    probs = logits.softmax(1).permute(0, 2, 3, 1)[valid]  # (B, K, H, W) -> (N, K) labelled pixels
    ref = _lovasz_reference(probs, target[valid])
    assert torch.allclose(loss.double(), ref, atol=1e-6)
    (g,) = torch.autograd.grad(loss, logits)
    (g_ref,) = torch.autograd.grad(ref, logits)
    assert torch.allclose(g.double(), g_ref, atol=1e-6)
    assert g[~valid[:, None].expand_as(g)].abs().max() == 0  # ignored pixels get no gradient


def test_per_image_is_the_mean_of_image_losses() -> None:
    logits, target = _inputs()
    per_image = _term(per_image=True)(SegOutput(logits, None, []), target)
    whole = [_term()(SegOutput(logits[b:b + 1], None, []), target[b:b + 1]) for b in range(2)]
    assert torch.allclose(per_image, torch.stack(whole).mean())


@pytest.mark.parametrize("empty", [0, 1])
def test_per_image_leaves_out_an_image_without_labels(empty: int) -> None:
    """smp (and the original code) fail on an all-ignore image with per_image; it is left out of the mean."""
    logits, target = _inputs()
    target[empty] = 255
    loss = _term(per_image=True)(SegOutput(logits, None, []), target)
    other = 1 - empty
    assert torch.allclose(loss, _term()(SegOutput(logits[other:other + 1], None, []), target[other:other + 1]))
    (g,) = torch.autograd.grad(loss, logits)
    assert g[empty].abs().max() == 0 and g[other].abs().max() > 0


def test_all_ignore_is_a_connected_zero() -> None:
    logits = torch.randn(2, 4, 3, 3, requires_grad=True)
    loss = _term()(SegOutput(logits, None, []), torch.full((2, 3, 3), 255))
    assert loss.shape == () and loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().max() == 0


def test_low_resolution_logits_and_aux() -> None:
    logits, target = torch.randn(2, 4, 2, 3), torch.randint(0, 4, (2, 4, 6))
    out = _term(aux_weight=0.5)(SegOutput(logits, logits, []), target)
    assert torch.allclose(out.loss, 1.5 * out.logs["lovasz_main"]) and set(out.logs) == {"lovasz_main", "lovasz_aux"}
