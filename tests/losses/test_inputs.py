"""Wrong inputs to the contrastive losses are clear errors (or, for an anchor budget that draws nothing, a warning),
never a silently wrong value (issue 16)."""

import warnings

import pytest
import torch

from contrastseg.errors import ConfigError
from contrastseg.losses import (
    MultiScaleContrast,
    MultiScaleContrastiveLoss,
    checks,
    sample_anchor_indices,
    sample_balanced_anchors,
    supervised_infonce,
)
from contrastseg.losses.base import LossContext
from contrastseg.losses.sampling import sample_anchor_indices_multiscale

STRIDES = (4, 8, 16, 32)


def _embeddings(b=2, d=8, h=64, w=96):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(b, d, h // s, w // s, generator=g, requires_grad=True) for s in STRIDES]


def _labels(b=2, h=64, w=96):
    bands = (torch.arange(w) // 32) % 3  # (W,) three classes, each >= 5 pixels at stride 32
    return torch.stack([bands.roll(i).expand(h, w) for i in range(b)]).clone()


# ----------------------------------------------------------------------------------------- MultiScaleContrastiveLoss


def test_embeddings_of_another_batch_than_the_labels_are_an_error() -> None:
    emb = _embeddings(b=3)
    with pytest.raises(ValueError, match=r"embeddings\[0\] \(3, 8, 16, 24\) has batch 3 but labels \(2, 64, 96\)"):
        MultiScaleContrastiveLoss()(emb, _labels(b=2))
    emb = [e[:2] for e in emb[:2]] + emb[2:]  # scales 2 and 3 disagree
    with pytest.raises(ValueError, match=r"embeddings\[2\] \(3, 8, 4, 6\) has batch 3"):
        MultiScaleContrastiveLoss()(emb, _labels(b=2))


def test_every_embedding_map_is_checked_also_unused_ones() -> None:
    emb = _embeddings()
    emb[1] = emb[1][:1]  # scale 1: weight 0 and in no pair, but still the wrong batch
    loss = MultiScaleContrastiveLoss(scale_weights=(1.0, 0.0, 0.0, 1.0), cross_scale_pairs=((0, 3),),
                                     cross_scale_weights=(1.0,))
    with pytest.raises(ValueError, match=r"embeddings\[1\] \(1, 8, 8, 12\) has batch 1"):
        loss(emb, _labels())


def test_embeddings_must_be_4d() -> None:
    emb = _embeddings()
    emb[2] = emb[2][:, :, 0]  # (B, D, w)
    with pytest.raises(ValueError, match=r"embeddings\[2\] must be \(B, D, h, w\), got shape \(2, 8, 6\)"):
        MultiScaleContrastiveLoss()(emb, _labels())


def test_labels_with_a_channel_dimension_are_accepted() -> None:
    emb, labels = _embeddings(), _labels()
    loss = MultiScaleContrastiveLoss()
    plain = loss(emb, labels, generator=torch.Generator().manual_seed(0))
    channel = loss(emb, labels[:, None], generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.stack(plain.per_scale + plain.cross_scale),
                       torch.stack(channel.per_scale + channel.cross_scale))
    channel_labels = labels[:, None]
    ahead = loss.presample(channel_labels, strides=STRIDES, generator=torch.Generator().manual_seed(0))
    presampled = loss(emb, channel_labels, presampled=ahead)
    assert torch.equal(presampled.total, plain.total)


@pytest.mark.parametrize("shape", [(2, 64), (2, 2, 64, 96), (1, 2, 1, 64, 96)])
def test_labels_of_other_shapes_are_an_error(shape) -> None:
    labels = torch.zeros(shape, dtype=torch.long)
    with pytest.raises(ValueError, match=r"labels must be \(B, H, W\).*got shape " + str(shape).replace("(", r"\(")
                       .replace(")", r"\)")):
        MultiScaleContrastiveLoss()(_embeddings(), labels)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bool])
def test_floating_labels_are_an_error(dtype) -> None:
    labels = _labels().to(dtype)
    with pytest.raises(ValueError, match=f"labels must hold integer class ids, got {dtype}"):
        MultiScaleContrastiveLoss()(_embeddings(), labels)
    with pytest.raises(ValueError, match="integer class ids"):
        MultiScaleContrastiveLoss().presample(labels, strides=STRIDES)


def test_embedding_width_mismatch_of_a_cross_scale_pair_names_the_pair() -> None:
    emb = _embeddings()
    emb[3] = torch.randn(2, 16, 2, 3)  # D = 16 at scale 3, 8 elsewhere
    with pytest.raises(ValueError, match=r"cross_scale_pairs \(0, 3\): embeddings\[0\] \(2, 8, 16, 24\) has D=8 "
                                         r"but embeddings\[3\] \(2, 16, 2, 3\) has D=16"):
        MultiScaleContrastiveLoss()(emb, _labels())
    # Without a pair across them, scales may have different widths.
    out = MultiScaleContrastiveLoss(cross_scale_pairs=((0, 2),), cross_scale_weights=(1.0,))(emb, _labels())
    assert torch.isfinite(out.total)


@pytest.mark.parametrize("key,value", [("max_anchors", 0), ("max_views_per_class", -1),
                                       ("min_views_per_class", 0), ("max_anchors", 2.5), ("ignore_index", 2.0)])
def test_sampling_options_are_checked_at_construction(key, value) -> None:
    with pytest.raises(ValueError, match=f"{key} must be a"):
        MultiScaleContrastiveLoss(**{key: value})
    term = MultiScaleContrast(**{key: value}) if key != "ignore_index" else None
    if term is not None:
        with pytest.raises(ConfigError, match=f"contrast: {key} must be a positive integer"):
            term.bind(LossContext(num_classes=3, ignore_index=255, feature_channels=(4, 4), feature_strides=(4, 8)))


# ----------------------------------------------------------------------------------------- supervised_infonce


def test_infonce_labels_with_a_trailing_dimension_are_an_error() -> None:
    """(N, 1) labels used to broadcast in the positive mask: 73.4 instead of 6.9."""
    a, y = torch.randn(40, 8), torch.randint(0, 3, (40,))
    with pytest.raises(ValueError, match=r"labels must be \(N,\) = \(40,\) for anchors \(40, 8\), got \(40, 1\)"):
        supervised_infonce(a, y[:, None])


@pytest.mark.parametrize("case", ["anchors_1d", "labels_short", "contrast_width", "contrast_labels",
                                  "contrast_3d"])
def test_infonce_shapes_are_checked(case) -> None:
    a, y = torch.randn(10, 8), torch.randint(0, 3, (10,))
    c, yc = torch.randn(6, 8), torch.randint(0, 3, (6,))
    args, match = {
        "anchors_1d": ((a[0], y), r"anchors must be \(N, D\), got shape \(8,\)"),
        "labels_short": ((a, y[:9]), r"labels must be \(N,\) = \(10,\) for anchors \(10, 8\), got \(9,\)"),
        "contrast_width": ((a, y, c[:, :4], yc), r"contrast must be \(M, D\) with anchors' D=8, got shape \(6, 4\)"),
        "contrast_labels": ((a, y, c, yc[:, None]),
                            r"contrast_labels must be \(M,\) = \(6,\) for contrast \(6, 8\), got \(6, 1\)"),
        "contrast_3d": ((a, y, c[None], yc), r"contrast must be \(M, D\) with anchors' D=8, got shape \(1, 6, 8\)"),
    }[case]
    with pytest.raises(ValueError, match=match):
        supervised_infonce(*args)


@pytest.mark.parametrize("temperature", [-0.1, 0.0, float("nan"), float("inf")])
def test_infonce_temperature_must_be_positive(temperature) -> None:
    with pytest.raises(ValueError, match="temperature must be a positive finite number"):
        supervised_infonce(torch.randn(10, 4), torch.randint(0, 3, (10,)), temperature=temperature)


# ----------------------------------------------------------------------------------------- samplers


@pytest.mark.parametrize("shape", [(2, 1, 8, 8), (8, 8)])
def test_sampler_labels_must_be_3d(shape) -> None:
    labels = torch.zeros(shape, dtype=torch.long)
    with pytest.raises(ValueError, match=r"labels must be \(B, h, w\), got shape"):
        sample_anchor_indices(labels)
    with pytest.raises(ValueError, match=r"labels\[1\] must be \(B, h, w\)"):
        sample_anchor_indices_multiscale([torch.zeros(2, 8, 8, dtype=torch.long), labels])


def test_sampler_scales_must_share_the_batch() -> None:
    with pytest.raises(ValueError, match=r"labels\[1\] \(3, 4, 4\) has batch 3 but labels\[0\] \(2, 8, 8\) 2"):
        sample_anchor_indices_multiscale([torch.zeros(2, 8, 8, dtype=torch.long),
                                          torch.zeros(3, 4, 4, dtype=torch.long)])


def test_sampler_floating_labels_are_an_error() -> None:
    with pytest.raises(ValueError, match="labels_s must hold integer class ids, got torch.float32"):
        sample_balanced_anchors(torch.randn(2, 4, 8, 8), torch.zeros(2, 8, 8))


def test_sampler_embeddings_must_be_4d() -> None:
    with pytest.raises(ValueError, match=r"embeddings_s must be \(B, D, h, w\), got shape \(2, 8, 8\)"):
        sample_balanced_anchors(torch.randn(2, 8, 8), torch.zeros(2, 8, 8, dtype=torch.long))


@pytest.mark.parametrize("key,value", [("min_views_per_class", 0), ("max_views_per_class", 0), ("max_anchors", -5),
                                       ("max_anchors", 100.0), ("min_views_per_class", True)])
def test_sampler_counts_must_be_positive_integers(key, value) -> None:
    with pytest.raises(ValueError, match=f"{key} must be a positive integer, got {value!r}"):
        sample_balanced_anchors(torch.randn(2, 4, 8, 8), torch.zeros(2, 8, 8, dtype=torch.long), **{key: value})


# ----------------------------------------------------------------------------------------- anchor budget


def _many_pairs(b=4, classes=6):
    """Every image holds every class (>= 5 pixels even at stride 32): T = b * classes pairs at each scale."""
    bands = torch.arange(192) // 32 % classes  # (W,)
    return torch.stack([bands.roll(32 * i).expand(64, 192) for i in range(b)]).clone()


def test_max_anchors_below_the_pair_count_warns_once(monkeypatch) -> None:
    """max_anchors < T gives V = 0: no anchors and an exact 0 loss at every step; the user hears about it once."""
    monkeypatch.setattr(checks, "_BUDGET_WARNED", False, raising=False)
    labels = _many_pairs()  # T = 24 at every scale
    emb = [torch.randn(4, 8, 64 // s, 192 // s, requires_grad=True) for s in STRIDES]
    loss = MultiScaleContrastiveLoss(max_anchors=20)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # as under pytest -W always or a logger that shows every warning
        for _ in range(3):
            out = loss(emb, labels, strides=STRIDES)
            ahead = loss.presample(labels, strides=STRIDES)
            loss(emb, labels, presampled=ahead)
            sample_anchor_indices(labels, max_anchors=20)
    budget = [w for w in caught if issubclass(w.category, UserWarning) and "max_anchors" in str(w.message)]
    assert len(budget) == 1, [str(w.message) for w in caught]
    message = str(budget[0].message)
    assert budget[0].category.__name__ == "AnchorBudgetWarning"
    assert "max_anchors=20" in message and "T=24" in message and "scale 0 (stride 4)" in message
    assert "raise max_anchors" in message and "batch" in message
    assert out.total.item() == 0.0  # the silent zero the warning is about


def test_no_budget_warning_when_every_scale_draws(monkeypatch) -> None:
    monkeypatch.setattr(checks, "_BUDGET_WARNED", False, raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        emb = [torch.randn(4, 8, 64 // s, 192 // s) for s in STRIDES]
        MultiScaleContrastiveLoss(max_anchors=24)(emb, _many_pairs())  # V = 1 at every scale
        MultiScaleContrastiveLoss(max_anchors=1)(emb, torch.full((4, 64, 192), 255))  # T = 0: nothing to warn
