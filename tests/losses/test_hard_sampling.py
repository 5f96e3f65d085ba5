"""Hard-anchor sampling against a loop-by-loop transcription of [36]'s rule."""

from __future__ import annotations

import pytest
import torch

from contrastseg.losses.hard_sampling import sample_hard_anchor_indices


def reference_counts(labels, predictions, *, ignore_index=255, max_samples=1024, max_views=100):
    """{(image, class): (hard kept, easy kept)} with loops, as [36]'s _hard_anchor_sampling decides them."""
    pairs = []
    for i in range(labels.shape[0]):
        for c in torch.unique(labels[i]).tolist():
            if c != ignore_index and c >= 0 and int((labels[i] == c).sum()) > max_views:
                pairs.append((i, c))
    if not pairs:
        return {}
    n = min(max_samples // len(pairs), max_views)
    out = {}
    for i, c in pairs:
        hard = int(((labels[i] == c) & (predictions[i] != c)).sum())
        easy = int(((labels[i] == c) & (predictions[i] == c)).sum())
        if hard >= n / 2 and easy >= n / 2:
            keep = (n // 2, n - n // 2)
        elif hard >= n / 2:
            keep = (n - easy, easy)
        else:
            keep = (hard, n - hard)
        if n:
            out[(i, c)] = keep
    return out


def _batch(seed: int, b: int = 3, h: int = 20, w: int = 24, classes: int = 4):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (b, h, w), generator=g)
    labels[0, :5] = 255
    labels[1] = torch.where(torch.rand(h, w, generator=g) < 0.9, 2, labels[1])  # class 2 dominates image 1
    predictions = torch.where(torch.rand(b, h, w, generator=g) < 0.6, labels, torch.randint(0, classes, (b, h, w),
                                                                                               generator=g))
    return labels, predictions


@pytest.mark.parametrize(("seed", "max_samples", "max_views"), [(0, 1024, 100), (1, 60, 30), (2, 7, 90),
                                                                 (3, 1024, 500), (4, 10, 1)])
def test_each_pair_gets_the_reference_numbers_of_hard_and_easy_anchors(seed, max_samples, max_views) -> None:
    labels, predictions = _batch(seed)
    index, anchor_labels = sample_hard_anchor_indices(labels, predictions, max_samples=max_samples,
                                                      max_views=max_views, generator=torch.Generator().manual_seed(9))
    expected = reference_counts(labels, predictions, max_samples=max_samples, max_views=max_views)
    assert index.unique().numel() == index.numel()  # without replacement
    flat_y, flat_p = labels.reshape(-1), predictions.reshape(-1)
    assert torch.equal(flat_y[index], anchor_labels)
    got = {}
    for i, c, hard in zip((index // labels[0].numel()).tolist(), anchor_labels.tolist(),
                          (flat_p[index] != flat_y[index]).tolist()):
        h, e = got.get((i, c), (0, 0))
        got[(i, c)] = (h + hard, e + (not hard))
    assert got == expected
    keys = [(c, i) for i, c in zip((index // labels[0].numel()).tolist(), anchor_labels.tolist())]
    assert keys == sorted(keys)  # (class, image) order


def test_draws_are_uniform_within_a_kind() -> None:
    labels = torch.zeros(1, 1, 40, dtype=torch.long)
    predictions = torch.zeros_like(labels)
    predictions[..., 20:] = 1  # pixels 20..39 are hard
    hits = torch.zeros(40)
    g = torch.Generator().manual_seed(0)
    for _ in range(400):
        index, _ = sample_hard_anchor_indices(labels, predictions, max_samples=8, max_views=8, generator=g)
        hits[index] += 1
    assert hits[:20].sum() == hits[20:].sum() == 1600  # 4 hard and 4 easy every time
    assert hits.min() > 40 and hits.max() < 120  # each pixel about 80 times


def test_nothing_to_sample_gives_empty_long_tensors() -> None:
    labels = torch.full((2, 4, 4), 255)
    for lab in (labels, torch.zeros(2, 4, 4, dtype=torch.long)):  # all ignore; too few pixels per class
        index, anchor_labels = sample_hard_anchor_indices(lab, torch.zeros_like(lab), max_views=100)
        assert index.numel() == anchor_labels.numel() == 0 and anchor_labels.dtype == torch.long
    many = torch.arange(16).reshape(1, 4, 4).repeat_interleave(4, 1).repeat_interleave(4, 2)  # 16 classes of 16 px
    index, _ = sample_hard_anchor_indices(many, many, max_samples=8, max_views=2)  # T = 16 > max_samples
    assert index.numel() == 0


def test_bad_input_is_a_one_line_error() -> None:
    labels = torch.zeros(2, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="predictions must have the labels' shape"):
        sample_hard_anchor_indices(labels, labels[:, :2])
    with pytest.raises(ValueError, match="max_views must be a positive integer"):
        sample_hard_anchor_indices(labels, labels, max_views=0)
