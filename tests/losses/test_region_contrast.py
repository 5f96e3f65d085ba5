"""RegionContrast ([15]) against a loop-by-loop reference of its formula; degenerate batches, the memory
update, bf16, a training run inside ContrastSegModule and option errors."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from lightning import Trainer

from contrastseg import ContrastSegModule
from contrastseg.data import SyntheticDataModule
from contrastseg.errors import ConfigError
from contrastseg.losses import CrossEntropy, LossContext, RegionContrast
from contrastseg.losses.infonce import l2_normalize
from contrastseg.losses.pairs import region_embeddings
from contrastseg.models import Encoder, HRNetV2Head, SegmentationModel, SegOutput

CHANNELS, STRIDES = (8, 16), (4, 8)
NUM_CLASSES, DIM, TEMPERATURE = 4, 16, 0.2
H, W = 32, 48


def _bound(**kw) -> RegionContrast:
    kw = {"embedding_dim": DIM, "temperature": TEMPERATURE, "memory_size": 6, "backend": "torch", **kw}
    term = RegionContrast(**kw)
    term.bind(LossContext(num_classes=NUM_CLASSES, ignore_index=255, feature_channels=CHANNELS,
                          feature_strides=STRIDES))
    return term


def _features(b=3, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, c, H // s, W // s, generator=g).requires_grad_(grad)
            for c, s in zip(CHANNELS, STRIDES)]


def _labels(b=3, seed=1):
    """Random 4x4 blocks of classes 0..2 and some ignore; class 3 never appears (only in the memory)."""
    g = torch.Generator().manual_seed(seed)
    blocks = torch.randint(0, 4, (b, H // 4, W // 4), generator=g)
    blocks[blocks == 3] = 255
    return blocks.repeat_interleave(4, 1).repeat_interleave(4, 2)


def _logits(b=3, seed=2):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, NUM_CLASSES, H // 4, W // 4, generator=g)
    return logits.repeat_interleave(4, 2).repeat_interleave(4, 3)


def _fill_memory(term: RegionContrast, seed=3) -> tuple[torch.Tensor, torch.Tensor]:
    """Two pushes of random unit rows: classes 0, 1 and 3, none of class 2 (its regions have no positives)."""
    g = torch.Generator().manual_seed(seed)
    rows, classes = [], []
    for labels in (torch.tensor([0, 1, 1, 3, 0]), torch.tensor([3, 0, 1])):
        r = F.normalize(torch.randn(len(labels), DIM, generator=g), dim=1)
        term.memory.push(r, labels)
        rows.append(r)
        classes.append(labels)
    return torch.cat(rows), torch.cat(classes)


def _infonce_loops(anchors, labels, contrast, contrast_labels, same_set):
    """1/R sum_i 1/|P(i)| sum_{j in P(i)} -log(e^{s_ij} / (e^{s_ij} + sum_{n in N(i)} e^{s_in})), by loops."""
    total = anchors.new_zeros(())
    for i in range(len(anchors)):
        positives = [j for j in range(len(contrast))
                     if contrast_labels[j] == labels[i] and not (same_set and j == i)]
        negatives = [n for n in range(len(contrast)) if contrast_labels[n] != labels[i]]
        if not positives or not negatives:
            continue
        neg_sum = sum(torch.exp(anchors[i] @ contrast[n] / TEMPERATURE) for n in negatives)
        term = anchors.new_zeros(())
        for j in positives:
            e = torch.exp(anchors[i] @ contrast[j] / TEMPERATURE)
            term = term - torch.log(e / (e + neg_sum))
        total = total + term / len(positives)
    return total / max(len(anchors), 1)


def _reference(term, features, target, logits, memory_rows, memory_classes, region_labels, include_batch):
    """The term's formula from scratch, in float64: (loss, region centres, their classes)."""
    size = features[0].shape[-2:]
    maps = [f if f.shape[-2:] == size else F.interpolate(f, size=size, mode="bilinear", align_corners=False)
            for f in features]
    emb = term.projector(torch.cat(maps, dim=1)).double()  # (B, d, h, w)
    stride = target.shape[-1] // size[-1]
    mask = target if region_labels == "gt" else logits.argmax(dim=1)
    mask = mask[:, ::stride, ::stride]  # nearest
    centres, classes = [], []
    for b in range(emb.shape[0]):
        for c in sorted(set(mask[b].unique().tolist()) - {255}):
            pixels = emb[b][:, mask[b] == c]  # (d, n_pixels)
            centres.append(F.normalize(pixels.mean(dim=1), dim=0))
            classes.append(c)
    centres = torch.stack(centres) if centres else emb.new_zeros(0, emb.shape[1])
    loss = _infonce_loops(centres, classes, memory_rows.double(), memory_classes.tolist(), same_set=False)
    if include_batch:
        loss = loss + _infonce_loops(centres, classes, centres, classes, same_set=True)
    return loss, centres, classes


@pytest.mark.parametrize("include_batch", [False, True])
@pytest.mark.parametrize("region_labels", ["gt", "prediction"])
def test_matches_the_loop_reference_in_value_and_gradient(region_labels: str, include_batch: bool) -> None:
    torch.manual_seed(0)
    term = _bound(region_labels=region_labels, include_batch=include_batch).train()
    memory_rows, memory_classes = _fill_memory(term)
    features, target, logits = _features(grad=True), _labels(), _logits()
    out = term(SegOutput(logits, None, features), target)
    expected, centres, classes = _reference(term, features, target, logits, memory_rows, memory_classes,
                                            region_labels, include_batch)
    assert out.loss.dtype == torch.float32 and out.loss > 0
    torch.testing.assert_close(out.loss.double(), expected, rtol=1e-5, atol=1e-6)
    assert out.logs["region_contrast_regions"].item() == len(classes)
    grads = torch.autograd.grad(out.loss, features)
    expected_grads = torch.autograd.grad(expected, features)
    for got, want in zip(grads, expected_grads):
        assert want.abs().max() > 0
        torch.testing.assert_close(got, want.float(), rtol=1e-4, atol=1e-6)


def test_the_memory_term_is_supervised_infonce_against_the_memory() -> None:
    """With include_batch the loss is exactly L_mem + L_batch (the two parts of the formula, separately)."""
    from contrastseg.losses import supervised_infonce

    memory_only, both = _bound(), _bound(include_batch=True)
    both.load_state_dict(memory_only.state_dict())
    rows, row_classes = _fill_memory(memory_only)
    _fill_memory(both)
    features, target = _features(), _labels()
    with torch.no_grad():
        l_mem = memory_only(SegOutput(_logits(), None, features), target).loss
        total = both(SegOutput(_logits(), None, features), target).loss
        _, centres, classes = memory_only.region_centres(SegOutput(_logits(), None, features), target)
        l_batch = supervised_infonce(centres, classes, temperature=TEMPERATURE)
        torch.testing.assert_close(l_mem, supervised_infonce(centres, classes, rows, row_classes,
                                                             temperature=TEMPERATURE))
    torch.testing.assert_close(total, l_mem + l_batch)


def _degenerate(case: str) -> torch.Tensor:
    target = _labels()
    if case == "all_ignore":
        target[:] = 255
    elif case == "one_class":
        target[:] = 1
    elif case == "single_pixel":
        target[:] = 255
        target[0, 8, 12] = 2  # one pixel at the embedding's stride-4 grid: a one-pixel region
        target[1:, :16] = 0
    return target


@pytest.mark.parametrize("include_batch", [False, True])
@pytest.mark.parametrize("case", ["all_ignore", "one_class", "single_pixel", "empty_memory"])
def test_degenerate_batches_are_finite_and_connected(case: str, include_batch: bool) -> None:
    term = _bound(include_batch=include_batch).train()
    if case != "empty_memory":
        _fill_memory(term)
    features, target = _features(grad=True), _degenerate(case)
    out = term(SegOutput(_logits(), None, features), target)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    missing = [n for n, p in term.named_parameters() if p.grad is None]
    assert not missing, missing
    assert all(torch.isfinite(p.grad).all() for p in term.parameters())
    regions = out.logs["region_contrast_regions"].item()
    if case == "all_ignore":
        assert regions == 0 and out.loss == 0
    if case == "one_class":  # one region per image, all of class 1
        assert regions == 3
    if case == "single_pixel":
        assert regions == 3 and out.loss > 0  # (0, class 2), (1, class 0), (2, class 0)
    if case == "empty_memory":
        assert regions > 0 and (out.loss > 0 if include_batch else out.loss == 0)


def test_one_class_against_a_one_class_memory_is_zero() -> None:
    term = _bound()
    term.memory.push(F.normalize(torch.randn(3, DIM), dim=1), torch.tensor([1, 1, 1]))
    target = _labels()
    target[:] = 1
    out = term(SegOutput(_logits(), None, _features()), target)
    assert out.loss == 0  # positives but no negatives: an exact 0


def test_after_backward_stores_the_normalised_region_centres() -> None:
    term = _bound(memory_size=50).train()
    features, target = _features(), _labels()
    out = term(SegOutput(_logits(), None, features), target)
    assert int(term.memory.count.sum()) == 0  # nothing before the backward pass
    out.loss.backward()
    term.after_backward()
    with torch.no_grad():  # the same batch statistics: the same embeddings
        means, classes, _ = region_embeddings(term.embed(features), target[:, ::4, ::4])
        centres = l2_normalize(means)
    assert int(term.memory.count.sum()) == len(classes) == out.logs["region_contrast_regions"].item()
    for c in range(NUM_CLASSES):
        torch.testing.assert_close(term.memory.queue(c), centres[classes == c], rtol=0, atol=1e-6)
    assert torch.allclose(term.memory.queue(0).norm(dim=1), torch.ones(1))
    term.after_backward()  # a second call without a forward pass adds nothing
    assert int(term.memory.count.sum()) == len(classes)

    # an evaluation forward stores nothing, and drops a training forward's pending centres
    term.train()(SegOutput(_logits(), None, features), target)
    term.eval()(SegOutput(_logits(), None, features), target)
    term.after_backward()
    assert int(term.memory.count.sum()) == len(classes)

    fresh = _bound()
    fresh.after_backward()  # no forward pass at all
    assert int(fresh.memory.count.sum()) == 0


def test_bf16_autocast() -> None:
    term = _bound(include_batch=True).eval()  # fixed BatchNorm statistics: both runs see the same function
    _fill_memory(term)
    features, target = _features(grad=True), _labels()
    out32 = term(SegOutput(_logits(), None, features), target).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert term.embed(features).dtype == torch.bfloat16
        out16 = term(SegOutput(_logits(), None, features), target).loss
    assert out16.dtype == torch.float32 and torch.isfinite(out16)
    torch.testing.assert_close(out16, out32, rtol=5e-2, atol=5e-2)
    out16.backward()
    assert all(torch.isfinite(f.grad).all() and f.grad.abs().max() > 0 for f in features)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in term.parameters())


def test_trains_inside_contrastseg_module() -> None:
    torch.manual_seed(0)
    net = SegmentationModel(8, encoder=Encoder("resnet18"), decoder=partial(HRNetV2Head, channels=16))
    term = RegionContrast(memory_size=8, embedding_dim=32, backend="torch")
    module = ContrastSegModule(net, num_classes=8, losses=[CrossEntropy(), term])
    regions, counts = [], []
    forward, after_backward = term.forward, term.after_backward

    def record_forward(output, target):
        out = forward(output, target)
        regions.append(int(out.logs["region_contrast_regions"]))
        return out

    def record_after_backward():
        after_backward()
        counts.append(int(term.memory.count.sum()))

    term.forward, term.after_backward = record_forward, record_after_backward
    data = SyntheticDataModule(num_train=4, num_val=2, image_size=(64, 64), batch_size=2, num_workers=0)
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, fast_dev_run=2)
    trainer.fit(module, datamodule=data)
    assert len(regions) == 2 and all(r > 0 for r in regions)  # training steps only: the term is train_only
    assert counts == [regions[0], regions[0] + regions[1]]  # 2 images x <= 8 classes: no class wraps around
    assert int(term.memory.count.sum()) == counts[-1]  # validation added nothing
    assert "train/loss_region_contrast" in trainer.logged_metrics


@pytest.mark.parametrize("kw,match", [
    ({"temperature": 0.0}, "temperature"), ({"memory_size": 0}, "memory_size"),
    ({"embedding_dim": 0}, "embedding_dim"), ({"projector_depth": -1}, "projector_depth"),
    ({"region_labels": "pred"}, "region_labels"), ({"backend": "cuda"}, "backend"),
    ({"include_batch": "yes"}, "include_batch"), ({"stages": [2]}, "stages"),
])
def test_bad_options_are_config_errors(kw, match) -> None:
    with pytest.raises(ConfigError, match=match):
        _bound(**kw)


def test_needs_feature_stages() -> None:
    with pytest.raises(ConfigError, match="feature_channels"):
        RegionContrast().bind(LossContext(num_classes=3))
