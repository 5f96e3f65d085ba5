"""Slow, obviously correct implementations written straight from the paper's equations (tests only)."""

import torch
import torch.nn.functional as F

# The plain vectorised form (materialises N x M) is the benchmark's baseline; the tests check it against Eq. 1-2 too.
from benchmarks.contrastive_loss import _dense_infonce as infonce_dense  # noqa: F401


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
