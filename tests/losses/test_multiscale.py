import math

import pytest
import torch

from contrastseg.losses import MultiScaleContrastiveLoss, multiscale, supervised_infonce
from contrastseg.losses.multiscale import downsample_labels
from contrastseg.losses.sampling import gather_pixels, sample_anchor_indices_multiscale

from .reference import balanced_draw_loops

STRIDES = (4, 8, 16, 32)


def _embeddings(b=2, d=8, h=128, w=192, grad=True):
    return [torch.randn(b, d, h // s, w // s, requires_grad=grad) for s in STRIDES]


def _labels(b=2, h=128, w=192, seed=0):
    """Three classes in vertical bands of 64 pixels, so each has >= 5 pixels even at stride 32."""
    g = torch.Generator().manual_seed(seed)
    bands = (torch.arange(w) // 64) % 3  # (W,)
    return torch.stack([torch.randperm(3, generator=g)[bands].expand(h, w) for _ in range(b)]).clone()


def test_default_arguments_match_the_paper() -> None:
    loss = MultiScaleContrastiveLoss()
    assert loss.scale_weights == [1.0, 0.7, 0.4, 0.1]
    assert loss.cross_scale_pairs == [(0, 3), (0, 2)] and loss.cross_scale_weights == [1.0, 1.0]
    assert loss.temperature == loss.cross_scale_temperature == 0.1
    assert loss.sampling == {"ignore_index": 255, "min_views_per_class": 5, "max_views_per_class": 2500,
                             "max_anchors": 10000}


def test_total_is_the_weighted_sum_of_the_reference_terms() -> None:
    emb, labels = _embeddings(), _labels()
    loss = MultiScaleContrastiveLoss(cross_scale_temperature=0.3)
    out = loss(emb, labels, generator=torch.Generator().manual_seed(7))
    # Recompute each term from the functional pieces with the same random draws.
    g = torch.Generator().manual_seed(7)
    drawn = sample_anchor_indices_multiscale([labels[:, ::s, ::s] for s in STRIDES], generator=g)
    sets = [(gather_pixels(e, index), lab) for e, (index, lab) in zip(emb, drawn)]
    per_scale = [supervised_infonce(*sets[s]) for s in range(4)]
    cross = [supervised_infonce(*sets[0], *sets[3], temperature=0.3), supervised_infonce(*sets[0], *sets[2], temperature=0.3)]
    for got, ref in zip(out.per_scale + out.cross_scale, per_scale + cross):
        torch.testing.assert_close(got, ref)
    expected = sum(w * l for w, l in zip((1.0, 0.7, 0.4, 0.1), per_scale)) + cross[0] + cross[1]
    torch.testing.assert_close(out.total, expected)
    assert all(l.item() > 0 for l in out.per_scale + out.cross_scale)


@pytest.mark.parametrize("ids,ignore", [((7, 300, 65534), 255), ((300, 65534, 70000), 65535)])
def test_large_class_ids_reach_the_loss(ids, ignore) -> None:
    """Classes >= 256 are anchors like any other (they were never drawn: one class left, a zero loss)."""
    emb = _embeddings()
    labels = torch.tensor(ids)[_labels()]  # three bands of the large ids
    labels[:, :8] = ignore
    out = MultiScaleContrastiveLoss(ignore_index=ignore)(emb, labels, generator=torch.Generator().manual_seed(5))
    drawn = balanced_draw_loops([labels[:, ::s, ::s] for s in STRIDES], torch.Generator().manual_seed(5),
                                ignore=ignore)
    sets = [(gather_pixels(e, index), lab) for e, (index, lab) in zip(emb, drawn)]
    assert all(set(lab.tolist()) == set(ids) for _, lab in sets)
    expected = [supervised_infonce(*sets[s]) for s in range(4)]
    expected += [supervised_infonce(*sets[0], *sets[3]), supervised_infonce(*sets[0], *sets[2])]
    torch.testing.assert_close(torch.stack(out.per_scale + out.cross_scale), torch.stack(expected))
    assert all(v > 0 for v in expected)


def test_cross_scale_temperature_is_honoured() -> None:
    emb, labels = _embeddings(), _labels()
    a = MultiScaleContrastiveLoss(cross_scale_temperature=0.5)(emb, labels, generator=torch.Generator().manual_seed(0))
    b = MultiScaleContrastiveLoss()(emb, labels, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a.per_scale, b.per_scale)
    assert not torch.allclose(a.cross_scale[0], b.cross_scale[0])


def test_cross_scale_gradients_reach_both_scales() -> None:
    emb, labels = _embeddings(), _labels()
    out = MultiScaleContrastiveLoss(scale_weights=(0, 0, 0, 0), cross_scale_pairs=((0, 3),),
                                    cross_scale_weights=(1.0,))(emb, labels)
    out.total.backward()
    assert emb[0].grad.abs().sum() > 0 and emb[3].grad.abs().sum() > 0
    assert emb[1].grad is not None and emb[1].grad.abs().sum() == 0


def test_labels_downsampled_by_nearest_sampling() -> None:
    labels = torch.randint(0, 9, (2, 72, 104))
    assert torch.equal(downsample_labels(labels, (18, 26)), labels[:, ::4, ::4])
    assert torch.equal(downsample_labels(labels, (3, 4)), labels[:, ::32, ::32])  # ceil-sized maps
    assert downsample_labels(labels, (5, 7)).shape == (2, 5, 7)  # not a stride apart: nearest interpolation


def _equal_count_labels(b, h, w, classes, seed):
    """Every (image, class) pair has exactly h*w/classes pixels, so balanced sampling keeps every pixel."""
    g = torch.Generator().manual_seed(seed)
    base = torch.arange(h * w) % classes
    return torch.stack([base[torch.randperm(h * w, generator=g)] for _ in range(b)]).view(b, h, w)


def test_invariant_to_pixel_and_image_permutations() -> None:
    loss = MultiScaleContrastiveLoss(scale_weights=(1.0,), cross_scale_pairs=(), cross_scale_weights=())
    labels = _equal_count_labels(3, 8, 8, 4, seed=0)
    emb = torch.randn(3, 6, 8, 8)
    ref = loss([emb], labels).total
    perm = torch.randperm(64)
    emb_p = emb.flatten(2)[:, :, perm].view(3, 6, 8, 8)  # (B, D, 64) permuted pixels -> (B, D, 8, 8)
    labels_p = labels.flatten(1)[:, perm].view(3, 8, 8)
    torch.testing.assert_close(loss([emb_p], labels_p).total, ref)
    order = torch.tensor([2, 0, 1])
    torch.testing.assert_close(loss([emb[order]], labels[order]).total, ref)


def test_ignore_pixels_never_reach_the_loss() -> None:
    emb, labels = _embeddings(grad=False), _labels()
    labels[:, :, :64] = 255  # the first third of the columns
    for e in emb:  # NaN wherever the label is ignore: any use of those pixels would poison the loss
        e[:, :, :, : e.shape[-1] // 3] = float("nan")
    out = MultiScaleContrastiveLoss()(emb, labels)
    assert math.isfinite(out.total.item()) and out.total.item() > 0


@pytest.mark.parametrize("case", ["all_ignore", "one_class", "single_pixel_class", "tiny_batch"])
def test_edge_cases_are_finite_with_gradients(case: str) -> None:
    emb, labels = _embeddings(), _labels()
    kw = {}
    if case == "all_ignore":
        labels[:] = 255
    elif case == "one_class":
        labels[:] = 3
    elif case == "single_pixel_class":
        labels[0, 0, 0] = 9  # one pixel: below min_views, so it is ignored at every scale
    elif case == "tiny_batch":
        emb, labels = [e[:1].detach().requires_grad_() for e in emb], labels[:1]
        kw = {"min_views_per_class": 1}
    out = MultiScaleContrastiveLoss(**kw)(emb, labels)
    assert math.isfinite(out.total.item())
    out.total.backward()
    for e in emb:
        assert e.grad is not None and torch.isfinite(e.grad).all()
    if case in ("all_ignore", "one_class"):
        assert out.total.item() == 0.0


def test_mismatched_scale_count_is_an_error() -> None:
    with pytest.raises(ValueError, match="3 embedding maps but 4 scale_weights"):
        MultiScaleContrastiveLoss()(_embeddings()[:3], _labels())
    with pytest.raises(ValueError, match="two different scales"):
        MultiScaleContrastiveLoss(cross_scale_pairs=((0, 4),), cross_scale_weights=(1.0,))


def test_sampling_all_uses_every_labelled_pixel_and_has_a_hard_cap() -> None:
    from contrastseg.benchmarks.contrastive_loss import _dense_infonce
    from contrastseg.errors import AnchorLimitError

    g = torch.Generator().manual_seed(0)
    emb = torch.randn(2, 8, 4, 4, generator=g, requires_grad=True)
    labels = torch.randint(0, 3, (2, 4, 4), generator=g)
    labels[0, 0] = 255
    loss = MultiScaleContrastiveLoss(scale_weights=(1.0,), cross_scale_pairs=(), cross_scale_weights=(),
                                     sampling="all")
    out = loss([emb], labels)
    valid = labels.reshape(-1) != 255
    rows = emb.permute(0, 2, 3, 1).reshape(-1, 8)[valid]  # (B, D, h, w) -> (N, D): every labelled pixel
    ref = _dense_infonce(rows, labels.reshape(-1)[valid], t=0.1)
    assert torch.allclose(out.total, ref)
    index = loss._all_labelled(labels, 0)
    assert sorted(index.tolist()) == valid.nonzero()[:, 0].tolist()  # every labelled pixel once
    assert (labels.reshape(-1)[index].diff() >= 0).all()  # grouped by class
    capped = MultiScaleContrastiveLoss(scale_weights=(1.0,), cross_scale_pairs=(), cross_scale_weights=(),
                                       sampling="all", all_max_anchors=10)
    with pytest.raises(AnchorLimitError, match=r"28 labelled pixels as anchors \(all_max_anchors=10\)"):
        capped([emb], labels)
    with pytest.raises(ValueError, match="gather_distributed"):
        MultiScaleContrastiveLoss(sampling="all", gather_distributed=True)


def test_sampling_all_never_uses_negative_labels() -> None:
    """Like the balanced sampler, sampling='all' skips negative labels (they were anchors of a class -1)."""
    labels = torch.randint(0, 3, (2, 4, 4), generator=torch.Generator().manual_seed(0))
    labels[0, 0] = -1
    loss = MultiScaleContrastiveLoss(scale_weights=(1.0,), cross_scale_pairs=(), cross_scale_weights=(),
                                     sampling="all")
    index = loss._all_labelled(labels, 0)
    assert sorted(index.tolist()) == (labels.reshape(-1) >= 0).nonzero()[:, 0].tolist()


def test_presampled_anchors_give_the_loss_of_sampling_inside() -> None:
    emb, labels = _embeddings(), _labels()
    loss = MultiScaleContrastiveLoss()
    inside = loss(emb, labels, strides=(4, 8, 16, 32), generator=torch.Generator().manual_seed(3))
    ahead = loss.presample(labels, strides=(4, 8, 16, 32), generator=torch.Generator().manual_seed(3))
    assert set(ahead.drawn) == {0, 1, 2, 3} and ahead.sizes[0] == (32, 48)
    out = loss(emb, labels, presampled=ahead)
    assert torch.equal(torch.stack(out.per_scale + out.cross_scale), torch.stack(inside.per_scale + inside.cross_scale))


def test_presampled_anchors_are_ignored_for_other_labels_or_sizes(monkeypatch) -> None:
    emb, labels = _embeddings(), _labels()
    loss = MultiScaleContrastiveLoss()
    ahead = loss.presample(labels, strides=(4, 8, 16, 32))
    calls = []
    real = multiscale.sample_anchor_indices_multiscale
    monkeypatch.setattr(multiscale, "sample_anchor_indices_multiscale", lambda *a, **k: calls.append(1) or real(*a, **k))
    loss(emb, labels, presampled=ahead)
    assert calls == []  # the anchors drawn ahead were used
    loss(emb, labels.clone(), presampled=ahead)  # other labels (another batch): drawn again
    loss([e[..., :-1, :] for e in emb], labels, presampled=ahead)  # maps of other sizes: drawn again
    assert calls == [1, 1]
    assert MultiScaleContrastiveLoss(sampling="all").presample(labels, strides=(4, 8, 16, 32)) is None
