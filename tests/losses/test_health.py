"""The health figures against hand computations on tiny batches."""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

from contrastseg.losses.health import (
    alignment_uniformity,
    anchor_statistics,
    classes_with_positives,
    shared_classes,
)


def test_anchor_statistics_by_hand() -> None:
    # Image 0: class 0 x 3 pixels, class 1 x 1 pixel; image 1: class 1 x 2, class 2 x 1, ignore x 1.
    labels = torch.tensor([[[0, 0], [0, 1]], [[1, 1], [2, 255]]])
    # Anchors: pixels 0, 1 (image 0, class 0) and 4, 5 (image 1, class 1).
    index = torch.tensor([0, 1, 4, 5])
    stats = anchor_statistics(labels, index, labels.reshape(-1)[index], num_classes=3)
    assert float(stats["anchors"]) == 4
    assert float(stats["pairs"]) == 4  # (0, 0), (0, 1), (1, 1), (1, 2)
    assert float(stats["sampled_pairs"]) == 2
    assert float(stats["views"]) == 2
    assert float(stats["classes_with_positives"]) == 2  # classes 0 and 1 have two anchors each
    assert float(stats["median_pair_pixels"]) in (1.0, 2.0)  # sizes 3, 1, 2, 1: torch's lower median is 1


def test_anchor_statistics_of_an_all_ignore_batch() -> None:
    labels = torch.full((2, 3, 3), 255)
    stats = anchor_statistics(labels, torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long),
                              num_classes=4)
    assert {k: float(v) for k, v in stats.items()} == {
        "anchors": 0, "pairs": 0, "sampled_pairs": 0, "views": 0, "classes_with_positives": 0,
        "median_pair_pixels": 0}


def test_classes_with_positives_and_shared_classes() -> None:
    assert int(classes_with_positives(torch.tensor([0, 0, 1, 2, 2, 2]), 4)) == 2
    assert int(classes_with_positives(torch.tensor([3]), 4)) == 0
    assert int(shared_classes(torch.tensor([0, 1, 1]), torch.tensor([1, 2]), 3)) == 1


def _reference(z: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Wang & Isola's definitions as loops over ordered pairs i != j."""
    same, potentials = [], []
    for i, j in itertools.permutations(range(len(z)), 2):
        d = float(((z[i] - z[j]) ** 2).sum())
        potentials.append(math.exp(-2 * d))
        if y[i] == y[j]:
            same.append(d)
    return sum(same) / len(same), math.log(sum(potentials) / len(potentials))


def test_alignment_and_uniformity_against_loops() -> None:
    torch.manual_seed(0)
    z = F.normalize(torch.randn(7, 5), dim=1)
    y = torch.tensor([0, 0, 1, 1, 1, 2, 3])
    alignment, uniformity = alignment_uniformity(z, y)
    ref_alignment, ref_uniformity = _reference(z, y)
    assert math.isclose(float(alignment), ref_alignment, rel_tol=1e-5)
    assert math.isclose(float(uniformity), ref_uniformity, rel_tol=1e-5)


def test_alignment_of_collapsed_classes_is_zero_and_subsampling_keeps_every_class() -> None:
    z = F.normalize(torch.tensor([[1.0, 0.0]] * 5 + [[0.0, 1.0]] * 5), dim=1)
    y = torch.tensor([0] * 5 + [1] * 5)
    alignment, uniformity = alignment_uniformity(z, y, max_anchors=4)  # strided: 2 of each class
    assert float(alignment) == 0.0
    # 4 anchors, 12 ordered pairs: 4 same-class (distance 0) and 8 orthogonal (distance 2).
    assert math.isclose(float(uniformity), math.log((4 + 8 * math.exp(-4)) / 12), rel_tol=1e-6)


def test_alignment_without_positives_is_nan() -> None:
    alignment, uniformity = alignment_uniformity(F.normalize(torch.randn(3, 4), dim=1), torch.tensor([0, 1, 2]))
    assert math.isnan(float(alignment)) and not math.isnan(float(uniformity))
