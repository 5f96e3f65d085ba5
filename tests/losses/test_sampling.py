"""The balanced sampler against a slow per-pair specification."""

import pytest
import torch

from contrastseg.losses import sample_anchor_indices, sample_balanced_anchors
from contrastseg.losses.sampling import gather_pixels, sample_anchor_indices_multiscale


def _spec_v(labels: torch.Tensor, ignore=255, min_views=5, max_views=2500, max_anchors=10000):
    """Straight from the specification, with Python loops over (image, class) pairs."""
    counts = {}
    for b in range(labels.shape[0]):
        for c in labels[b].unique().tolist():
            if c == ignore:
                continue
            n = int((labels[b] == c).sum())
            if n >= min_views:
                counts[(b, c)] = n
    if not counts:
        return counts, 0
    v = min(min(counts.values()), max_views)
    if v * len(counts) > max_anchors:
        v = max_anchors // len(counts)
    return counts, v


def _imbalanced_labels(b: int, h: int, w: int, classes: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(classes, generator=g) ** 4 + 1e-4  # heavy imbalance
    labels = torch.multinomial(probs, b * h * w, replacement=True, generator=g).view(b, h, w)
    labels[torch.rand(b, h, w, generator=g) < 0.1] = 255
    return labels


@pytest.mark.parametrize("classes,max_views,max_anchors", [(5, 2500, 10000), (19, 30, 10000), (150, 2500, 2000)])
def test_counts_match_specification(classes: int, max_views: int, max_anchors: int) -> None:
    labels = _imbalanced_labels(4, 48, 64, classes, seed=classes)
    b, h, w = labels.shape
    # Embedding = the pixel's flat index, so each anchor says exactly which pixel it came from.
    ids = torch.arange(b * h * w, dtype=torch.float64).view(b, 1, h, w)
    anchors, anchor_labels = sample_balanced_anchors(ids, labels, max_views_per_class=max_views,
                                                     max_anchors=max_anchors)
    counts, v = _spec_v(labels, max_views=max_views, max_anchors=max_anchors)
    assert v > 0 and anchors.shape == (v * len(counts), 1)
    pix = anchors[:, 0].long()
    assert len(pix.unique()) == len(pix), "sampled without replacement"
    flat = labels.flatten()
    assert torch.equal(flat[pix], anchor_labels), "anchor labels are the pixels' labels"
    assert (anchor_labels != 255).all(), "ignore pixels are never sampled"
    got = {}
    for p, c in zip(pix.tolist(), anchor_labels.tolist()):
        got[(p // (h * w), c)] = got.get((p // (h * w), c), 0) + 1
    assert got == {k: v for k in counts}, "every present pair gets exactly V anchors, absent pairs none"
    assert (anchor_labels[1:] >= anchor_labels[:-1]).all(), "grouped by class (the Triton kernels skip tiles without positives)"
    assert max(len(counts) * v, 0) <= max_anchors


def test_generator_reproducible() -> None:
    labels = _imbalanced_labels(2, 32, 32, 7, seed=1)
    draw = [sample_anchor_indices(labels, generator=torch.Generator().manual_seed(s))[0] for s in (3, 3, 4)]
    assert torch.equal(draw[0], draw[1]) and not torch.equal(draw[0], draw[2])


def test_each_pixel_of_a_pair_equally_likely() -> None:
    # Image 0: class 0 covers 20 pixels; image 1: class 1 covers 5, so V = 5 of the 20 each draw.
    labels = torch.full((2, 5, 5), 255)
    labels[0].view(-1)[:20] = 0
    labels[1].view(-1)[:5] = 1
    g = torch.Generator().manual_seed(0)
    hits = torch.zeros(50)
    draws = 4000
    for _ in range(draws):
        index, lab = sample_anchor_indices(labels, generator=g)
        hits += torch.bincount(index[lab == 0], minlength=50).float()
    observed = hits[:20]
    expected = draws * 5 / 20
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    assert hits[20:].sum() == 0
    assert chi2 < 43.8, f"chi-square {chi2:.1f} over 19 dof exceeds the 0.1% critical value"


def test_no_pair_present() -> None:
    labels = torch.full((2, 8, 8), 255)
    labels[0, 0, :3] = 1  # 3 pixels < min_views
    anchors, anchor_labels = sample_balanced_anchors(torch.randn(2, 4, 8, 8), labels)
    assert anchors.shape == (0, 4) and anchor_labels.shape == (0,)


def test_class_with_single_pixel_sets_v_when_allowed() -> None:
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, 3, 3] = 2
    anchors, anchor_labels = sample_balanced_anchors(torch.randn(1, 4, 8, 8), labels, min_views_per_class=1)
    assert sorted(anchor_labels.tolist()) == [0, 2]


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="disagree"):
        sample_balanced_anchors(torch.randn(2, 4, 8, 8), torch.zeros(2, 4, 4, dtype=torch.long))


@pytest.mark.parametrize("max_anchors", [10000, 150])
def test_all_scales_at_once_match_the_specification_per_scale(max_anchors: int) -> None:
    fine = _imbalanced_labels(3, 64, 96, 19, seed=5)
    scales = [fine, fine[:, ::2, ::2], fine[:, ::4, ::4], torch.full((3, 8, 12), 255)]  # the last: all ignore
    drawn = sample_anchor_indices_multiscale(scales, max_anchors=max_anchors, generator=torch.Generator().manual_seed(0))
    assert len(drawn) == 4 and drawn[3][0].numel() == 0
    for labels, (index, anchor_labels) in zip(scales[:3], drawn):
        counts, v = _spec_v(labels, max_anchors=max_anchors)
        plane = labels.shape[1] * labels.shape[2]
        assert index.numel() == v * len(counts) and len(index.unique()) == len(index)
        assert torch.equal(labels.reshape(-1)[index], anchor_labels)
        got: dict = {}
        for p, c in zip(index.tolist(), anchor_labels.tolist()):
            got[(p // plane, c)] = got.get((p // plane, c), 0) + 1
        assert got == {k: v for k in counts}


def test_labels_outside_the_value_range_stay_in_their_scale() -> None:
    """A label of 300 (or -1) is never sampled and does not leak into the next scale's (class, image) keys."""
    fine = torch.zeros(1, 4, 4, dtype=torch.long)
    fine[0, :2] = 300
    fine[0, 2, 0] = -1
    coarse = torch.ones(1, 2, 2, dtype=torch.long)
    (i0, y0), (i1, y1) = sample_anchor_indices_multiscale([fine, coarse], min_views_per_class=1,
                                                          generator=torch.Generator().manual_seed(0))
    assert y0.tolist() == [0] * 7 and sorted(i0.tolist()) == [9, 10, 11, 12, 13, 14, 15]
    assert y1.tolist() == [1] * 4 and sorted(i1.tolist()) == [0, 1, 2, 3]


def test_distinct_gather_has_the_same_gradient() -> None:
    emb = torch.randn(2, 5, 6, 7, requires_grad=True)
    index = torch.randperm(2 * 6 * 7)[:30]
    upstream = torch.randn(30, 5)
    fast = torch.autograd.grad((gather_pixels(emb, index, distinct=True) * upstream).sum(), emb)[0]
    plain = torch.autograd.grad((gather_pixels(emb, index) * upstream).sum(), emb)[0]
    assert torch.equal(gather_pixels(emb, index, distinct=True), gather_pixels(emb, index))
    torch.testing.assert_close(fast, plain, rtol=0, atol=0)
