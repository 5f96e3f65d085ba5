"""Slow, obviously correct implementations written straight from the paper's equations (tests only)."""

import torch
import torch.nn.functional as F


def infonce_loops(anchors, labels, contrast=None, contrast_labels=None, temperature=0.1):
    """Eq. 1-2 with explicit loops over anchors and their positives, in float64."""
    same_set = contrast is None
    z = F.normalize(anchors.double(), dim=1)
    zc = z if same_set else F.normalize(contrast.double(), dim=1)
    yc = labels if same_set else contrast_labels
    total = z.new_zeros(())
    for i in range(len(z)):
        positives = [j for j in range(len(zc)) if yc[j] == labels[i] and not (same_set and j == i)]
        negatives = [n for n in range(len(zc)) if yc[n] != labels[i]]
        if not positives:
            continue  # an anchor without positives contributes 0
        neg_sum = sum((torch.exp(z[i] @ zc[n] / temperature) for n in negatives), z.new_zeros(()))
        term = z.new_zeros(())
        for j in positives:
            e = torch.exp(z[i] @ zc[j] / temperature)
            term = term - torch.log(e / (e + neg_sum))
        total = total + term / len(positives)
    return total / len(z)


def infonce_dense(anchors, labels, contrast=None, contrast_labels=None, temperature=0.1):
    """The plain vectorised form (materialises N x M): the benchmark's baseline for the quadratic part."""
    same_set = contrast is None
    z = F.normalize(anchors.float(), dim=1)
    zc = z if same_set else F.normalize(contrast.float(), dim=1)
    yc = labels if same_set else contrast_labels
    logits = z @ zc.T / temperature
    pos = labels[:, None] == yc[None, :]
    neg = ~pos
    if same_set:
        pos = pos & ~torch.eye(len(z), dtype=torch.bool, device=z.device)
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    exp = torch.exp(logits)
    neg_sum = (exp * neg).sum(dim=1, keepdim=True)
    log_prob = logits - torch.log(exp + neg_sum)
    n_pos = pos.sum(dim=1)
    per_anchor = -(log_prob * pos).sum(dim=1) / n_pos.clamp_min(1)
    return per_anchor.sum() / len(z)
