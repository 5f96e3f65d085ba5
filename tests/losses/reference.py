"""Slow, obviously correct implementations written straight from the paper's equations (tests only)."""

import torch
import torch.nn.functional as F

# The plain vectorised form (materialises N x M) is the benchmark's baseline; the tests check it against Eq. 1-2 too.
from contrastseg.benchmarks.contrastive_loss import _dense_infonce as infonce_dense  # noqa: F401


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


def balanced_counts_loops(labels, ignore=255, min_views=5, max_views=2500, max_anchors=10000):
    """Sec. 3.3's pair sizes and ``V`` with Python loops over (image, class) pairs: ``({(b, c): pixels}, V)``.

    Any non-negative class id is a class; negative ids and ``ignore`` are never sampled.
    """
    counts = {}
    for b in range(labels.shape[0]):
        for c in labels[b].unique().tolist():
            if c == ignore or c < 0:
                continue
            n = int((labels[b] == c).sum())
            if n >= max(min_views, 1):
                counts[(b, c)] = n
    if not counts:
        return counts, 0
    v = min(min(counts.values()), max_views)
    if v * len(counts) > max_anchors:
        v = max_anchors // len(counts)
    return counts, v


def balanced_draw_loops(labels, generator, ignore=255, min_views=5, max_views=2500, max_anchors=10000):
    """The sampler's documented draw, with loops: per scale, ``(index, anchor_labels)``.

    One ``torch.rand`` over the pixels of every scale (concatenated, scale-major) gives a random order (its argsort);
    every present (image, class) pair of a scale takes its ``V`` pixels that come first in that order; pairs appear in
    (class, image) order, scale by scale.
    """
    sizes = [lab.numel() for lab in labels]
    noise = torch.rand(sum(sizes), generator=generator)
    rank = torch.empty_like(noise, dtype=torch.long)
    rank[torch.argsort(noise)] = torch.arange(len(noise))  # position of every pixel in the random order
    out, offset = [], 0
    for lab, size in zip(labels, sizes):
        counts, v = balanced_counts_loops(lab, ignore, min_views, max_views, max_anchors)
        flat, plane = lab.reshape(-1), lab.shape[1] * lab.shape[2]
        index, classes = [], []
        for b, c in sorted(counts, key=lambda pair: (pair[1], pair[0])):  # (class, image) order
            pixels = [p for p in range(b * plane, (b + 1) * plane) if flat[p] == c]
            pixels.sort(key=lambda p: int(rank[offset + p]))
            index += pixels[:v]
            classes += [c] * v
        out.append((torch.tensor(index, dtype=torch.long), torch.tensor(classes, dtype=torch.long)))
        offset += size
    return out
