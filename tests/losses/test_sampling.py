"""The balanced sampler against a slow per-pair specification."""

import pytest
import torch

from contrastseg.losses import sample_anchor_indices, sample_balanced_anchors
from contrastseg.losses.sampling import gather_pixels, sample_anchor_indices_multiscale

from .reference import balanced_counts_loops, balanced_draw_loops


def _spec_v(labels: torch.Tensor, ignore=255, min_views=5, max_views=2500, max_anchors=10000):
    """Straight from the specification, with Python loops over (image, class) pairs (``tests/test_cuda.py`` too)."""
    return balanced_counts_loops(labels, ignore, min_views, max_views, max_anchors)


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


def _large_id_labels(b: int, h: int, w: int, ids: tuple, ignore: int, seed: int) -> torch.Tensor:
    """Blobs (4 x 4 cells) of the given class ids, ~10% ignore and ~3% negative (never sampled) pixels."""
    g = torch.Generator().manual_seed(seed)
    cells = torch.tensor(ids)[torch.randint(0, len(ids), (b, h // 4, w // 4), generator=g)]
    labels = cells.repeat_interleave(4, 1).repeat_interleave(4, 2)
    noise = torch.rand(b, h, w, generator=g)
    labels[noise < 0.1] = ignore
    labels[noise < 0.03] = -1
    return labels


@pytest.mark.parametrize("ids,ignore,dtype", [
    ((0, 3, 300, 65534), 255, torch.long),  # ids above the old 256-entry table with the usual ignore value
    ((0, 3, 300, 65534), 65535, torch.int32),  # 16-bit label images: ignore 65535
    ((1, 300, 70000, 2**40), 65535, torch.long),  # beyond 16 bits
])
@pytest.mark.parametrize("max_anchors", [10000, 40])
def test_any_non_negative_class_id_is_drawn_like_the_reference(ids, ignore, dtype, max_anchors) -> None:
    """Classes >= 256 are sampled (they were silently never drawn); the draw is the reference's, scale by scale."""
    fine = _large_id_labels(3, 32, 48, ids, ignore, seed=len(ids) + ignore).to(dtype)
    scales = [fine, fine[:, ::2, ::2], fine[:, ::4, ::4]]
    options = dict(ignore_index=ignore, min_views_per_class=3, max_anchors=max_anchors)
    drawn = sample_anchor_indices_multiscale(scales, generator=torch.Generator().manual_seed(1), **options)
    expected = balanced_draw_loops(scales, torch.Generator().manual_seed(1), ignore=ignore, min_views=3,
                                   max_anchors=max_anchors)
    for labels, (index, anchor_labels), (want_index, want_labels) in zip(scales, drawn, expected):
        assert torch.equal(index, want_index) and torch.equal(anchor_labels, want_labels)
        assert torch.equal(labels.reshape(-1)[index].long(), anchor_labels)
    assert set(drawn[0][1].tolist()) == set(ids), "every class of the fine scale is drawn, large ids included"
    single = sample_anchor_indices(fine, generator=torch.Generator().manual_seed(1), **options)
    want = balanced_draw_loops([fine], torch.Generator().manual_seed(1), ignore=ignore, min_views=3,
                               max_anchors=max_anchors)[0]
    assert torch.equal(single[0], want[0]) and torch.equal(single[1], want[1])


def test_draw_is_the_reference_draw_for_usual_labels() -> None:
    """Labels below 256: the same draw as the documented algorithm (the sampler's draw before large ids existed)."""
    fine = _imbalanced_labels(3, 32, 48, 19, seed=2)
    scales = [fine, fine[:, ::2, ::2], fine[:, ::4, ::4], fine[:, ::8, ::8]]
    for max_anchors in (10000, 150):
        drawn = sample_anchor_indices_multiscale(scales, max_anchors=max_anchors,
                                                 generator=torch.Generator().manual_seed(4))
        expected = balanced_draw_loops(scales, torch.Generator().manual_seed(4), max_anchors=max_anchors)
        for (index, anchor_labels), (want_index, want_labels) in zip(drawn, expected):
            assert torch.equal(index, want_index) and torch.equal(anchor_labels, want_labels)


def test_negative_and_ignore_labels_are_never_drawn_and_stay_in_their_scale() -> None:
    """300 is a class; -1 and the ignore value never are, and nothing leaks into the next scale's pairs."""
    fine = torch.zeros(1, 4, 4, dtype=torch.long)
    fine[0, :2] = 300
    fine[0, 2, 0] = -1
    fine[0, 3, 3] = 255
    coarse = torch.ones(1, 2, 2, dtype=torch.long)
    (i0, y0), (i1, y1) = sample_anchor_indices_multiscale([fine, coarse], min_views_per_class=1,
                                                          generator=torch.Generator().manual_seed(0))
    assert y0.tolist() == [0] * 6 + [300] * 6  # K = 6 pixels of class 0
    assert set(i0[:6].tolist()) <= {9, 10, 11, 12, 13, 14} and set(i0[6:].tolist()) <= set(range(8))
    assert y1.tolist() == [1] * 4 and sorted(i1.tolist()) == [0, 1, 2, 3]


def test_empty_label_maps() -> None:
    for labels in (torch.zeros(0, 4, 4, dtype=torch.long), torch.zeros(2, 0, 4, dtype=torch.long)):
        (index, anchor_labels), = sample_anchor_indices_multiscale([labels])
        assert index.numel() == 0 and anchor_labels.numel() == 0


def test_distinct_gather_has_the_same_gradient() -> None:
    emb = torch.randn(2, 5, 6, 7, requires_grad=True)
    index = torch.randperm(2 * 6 * 7)[:30]
    upstream = torch.randn(30, 5)
    fast = torch.autograd.grad((gather_pixels(emb, index, distinct=True) * upstream).sum(), emb)[0]
    plain = torch.autograd.grad((gather_pixels(emb, index) * upstream).sum(), emb)[0]
    assert torch.equal(gather_pixels(emb, index, distinct=True), gather_pixels(emb, index))
    torch.testing.assert_close(fast, plain, rtol=0, atol=0)
