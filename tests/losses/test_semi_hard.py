"""Semi-hard sampling of [36]: the drawn sets follow the rule; the loss matches a loop over anchors."""

from __future__ import annotations

import math

import pytest
import torch

from contrastseg.losses.semi_hard import select_semi_hard, selected_infonce


def _unit(n, d, g):
    x = torch.randn(n, d, generator=g)
    return x / x.norm(dim=1, keepdim=True)


def reference_loss(anchors, memory, pos, pos_ok, neg, neg_ok, t):
    total = anchors.new_zeros(())
    for i in range(anchors.shape[0]):
        negs = [memory[j] for j, ok in zip(neg[i].tolist(), neg_ok[i].tolist()) if ok]
        poss = [memory[j] for j, ok in zip(pos[i].tolist(), pos_ok[i].tolist()) if ok]
        row = anchors.new_zeros(())
        for p in poss:
            num = torch.exp(anchors[i] @ p / t)
            den = num + sum((torch.exp(anchors[i] @ m / t) for m in negs), anchors.new_zeros(()))
            row = row - torch.log(num / den)
        total = total + (row / len(poss) if poss else row)
    return total / anchors.shape[0]


@pytest.mark.parametrize(("fraction", "kp", "kn"), [(0.1, 1024, 2048), (0.5, 3, 4), (1.0, 2, 100)])
def test_each_anchor_draws_from_its_farthest_positives_and_nearest_negatives(fraction, kp, kn) -> None:
    g = torch.Generator().manual_seed(0)
    anchors, memory = _unit(7, 5, g), _unit(90, 5, g)
    labels, memory_labels = torch.randint(0, 3, (7,), generator=g), torch.randint(0, 3, (90,), generator=g)
    pos, pos_ok, neg, neg_ok = select_semi_hard(anchors, labels, memory, memory_labels, fraction=fraction,
                                                num_positives=kp, num_negatives=kn, generator=g)
    s = anchors @ memory.T
    for i in range(7):
        same = memory_labels == labels[i]
        for cols, ok, allowed, key, k in ((pos, pos_ok, same, -s[i], kp), (neg, neg_ok, ~same, s[i], kn)):
            pool_size = math.ceil(fraction * int(allowed.sum()))
            pool = set(torch.topk(key.masked_fill(~allowed, float("-inf")), pool_size).indices.tolist())
            chosen = cols[i][ok[i]].tolist()
            assert len(chosen) == len(set(chosen)) == min(k, pool_size)
            assert set(chosen) <= pool


def test_loss_and_gradient_match_a_loop_over_anchors() -> None:
    g = torch.Generator().manual_seed(1)
    anchors, memory = _unit(6, 4, g), _unit(40, 4, g)
    labels, memory_labels = torch.randint(0, 3, (6,), generator=g), torch.randint(0, 3, (40,), generator=g)
    labels[0] = 7  # an anchor without positives in the memory adds 0
    chosen = select_semi_hard(anchors, labels, memory, memory_labels, fraction=0.5, num_positives=3,
                              num_negatives=5, generator=g)
    mine = anchors.clone().requires_grad_()
    ref = anchors.clone().requires_grad_()
    got = selected_infonce(mine, memory, *chosen, temperature=0.1)
    expected = reference_loss(ref, memory, *chosen, 0.1)
    torch.testing.assert_close(got, expected)
    got.backward()
    expected.backward()
    torch.testing.assert_close(mine.grad, ref.grad)


def test_degenerate_sets_give_a_graph_connected_zero() -> None:
    g = torch.Generator().manual_seed(2)
    anchors = _unit(4, 3, g).requires_grad_()
    for memory, memory_labels in ((torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)),  # empty memory
                                  (_unit(5, 3, g), torch.zeros(5, dtype=torch.long))):  # one class: no negatives
        chosen = select_semi_hard(anchors, torch.zeros(4, dtype=torch.long), memory, memory_labels)
        loss = selected_infonce(anchors, memory, *chosen, temperature=0.1)
        assert loss.item() == 0
        loss.backward()
        assert torch.equal(anchors.grad, torch.zeros_like(anchors))
