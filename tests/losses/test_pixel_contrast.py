"""PixelContrast ([36]) against loops written from its definition; memories, degenerate batches, the module."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F

from contrastseg import ContrastSegModule
from contrastseg.errors import ConfigError
from contrastseg.losses import CrossEntropy, LossContext
from contrastseg.losses.hard_sampling import sample_hard_anchor_indices
from contrastseg.losses.pixel_contrast import PixelContrast
from contrastseg.models import Encoder, HRNetV2Head, SegmentationModel, SegOutput

from .reference import infonce_loops

CHANNELS, STRIDES, CLASSES = (8, 16, 32, 64), (4, 8, 16, 32), 4


def _bound(**kw) -> PixelContrast:
    term = PixelContrast(embedding_dim=16, **kw)
    term.bind(LossContext(num_classes=CLASSES, ignore_index=255, feature_channels=CHANNELS, feature_strides=STRIDES))
    return term.eval()  # fixed BatchNorm statistics: the reference runs the same projector


def _batch(seed=0, b=2, h=64, w=64):
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(b, c, h // s, w // s, generator=g) for c, s in zip(CHANNELS, STRIDES)]
    labels = ((torch.arange(w) // 16) % CLASSES).expand(b, h, w).clone()
    labels[1, :, :16] = 255
    logits = torch.randn(b, CLASSES, h, w, generator=g) + 3 * F.one_hot(labels.clamp(max=CLASSES - 1), CLASSES
                                                                         ).permute(0, 3, 1, 2)
    return feats, labels, logits


def reference_pixel_contrast(term, feats, labels, logits, memory=None, seed=0):
    """[36] by loops: concat the stages at stride 4, project, draw the hard anchors (the sampler is tested on its
    own), then Eq. 1-2 of every anchor against the memory (or the other anchors), times t / t_base."""
    size = feats[0].shape[-2:]
    emb = term.projector(torch.cat([F.interpolate(f, size=size, mode="bilinear") if f.shape[-2:] != size else f
                                    for f in feats], dim=1))
    small = labels[:, ::4, ::4]
    pred = logits.argmax(1)[:, ::4, ::4]
    torch.manual_seed(seed)
    index, y = sample_hard_anchor_indices(small, pred, max_samples=term.max_samples, max_views=term.max_views)
    rows = torch.stack([emb[int(i) // small[0].numel(), :, (int(i) % small[0].numel()) // size[1],
                            int(i) % size[1]] for i in index])  # one pixel at a time
    if memory is None:
        loss = infonce_loops(rows, y, temperature=term.temperature)
    else:
        loss = infonce_loops(rows, y, memory[0], memory[1], temperature=term.temperature)
    return loss * term.temperature / term.base_temperature


@pytest.mark.parametrize("use_memory", [False, True])
def test_value_and_gradient_match_the_loop_reference(use_memory: bool) -> None:
    term = _bound(max_samples=40, max_views=6, memory=use_memory, memory_size=7)
    feats, labels, logits = _batch()
    memory = None
    if use_memory:
        g = torch.Generator().manual_seed(5)
        rows = F.normalize(torch.randn(30, 16, generator=g), dim=1)
        classes = torch.randint(0, CLASSES, (30,), generator=g)
        term.pixel_memory.push(rows[:20], classes[:20])
        term.region_memory.push(rows[20:], classes[20:])
        memory = (torch.cat([term.pixel_memory.contents()[0], term.region_memory.contents()[0]]),
                  torch.cat([term.pixel_memory.contents()[1], term.region_memory.contents()[1]]))
    mine = [f.clone().requires_grad_() for f in feats]
    ref = [f.clone().requires_grad_() for f in feats]
    torch.manual_seed(0)
    got = term(SegOutput(logits, None, mine), labels).loss
    expected = reference_pixel_contrast(term, ref, labels, logits, memory)
    assert got.item() > 0
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)
    got.backward()
    expected.backward()
    for a, b in zip(mine, ref):
        torch.testing.assert_close(a.grad, b.grad.float(), rtol=1e-4, atol=1e-6)


def test_after_backward_adds_pixels_and_class_means_from_the_step() -> None:
    term = _bound(memory_size=50, pixels_per_update=3).train()
    feats, labels, logits = _batch()
    term(SegOutput(logits, None, feats), labels)
    assert int(term.pixel_memory.count.sum()) == 0  # nothing before the backward pass
    term.after_backward()
    pairs = {(b, c) for b in range(2) for c in labels[b, ::4, ::4].unique().tolist() if c != 255}
    assert int(term.pixel_memory.count.sum()) == 3 * len(pairs)
    assert int(term.region_memory.count.sum()) == len(pairs)
    entries, _ = term.pixel_memory.contents()
    torch.testing.assert_close(entries.norm(dim=1), torch.ones(len(entries)))
    # the region entry of (image 0, class 1): the normalised mean of that class's normalised embeddings
    emb = F.normalize(term.embed(feats).detach(), dim=1)[0]
    mean = emb[:, labels[0, ::4, ::4] == 1].mean(dim=1)
    torch.testing.assert_close(term.region_memory.queue(1)[0], F.normalize(mean, dim=0), rtol=1e-4, atol=1e-5)
    term.after_backward()  # a second call without a forward adds nothing
    assert int(term.region_memory.count.sum()) == len(pairs)
    term.eval()
    term(SegOutput(logits, None, feats), labels)
    term.after_backward()  # evaluation forwards never fill the memory
    assert int(term.region_memory.count.sum()) == len(pairs)


@pytest.mark.parametrize("case", ["all_ignore", "one_class", "single_pixel", "empty_memory"])
def test_degenerate_batches_are_finite_and_reach_every_parameter(case: str) -> None:
    term = _bound(max_views=2).train()
    feats, labels, logits = _batch()
    if case == "all_ignore":
        labels[:] = 255
    elif case == "one_class":
        labels[labels != 255] = 2
    elif case == "single_pixel":
        labels[:] = 255
        labels[0, 0, 0] = 1
    if case != "empty_memory":
        term.pixel_memory.push(F.normalize(torch.randn(8, 16), dim=1), torch.arange(8) % CLASSES)
    feats = [f.requires_grad_() for f in feats]
    loss = term(SegOutput(logits, None, feats), labels).loss
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in term.parameters())
    term.after_backward()


def test_semi_hard_runs_against_the_memory_and_bf16_autocast_is_finite() -> None:
    term = _bound(negatives="semi_hard", semi_hard_positives=4, semi_hard_negatives=8, max_views=4).train()
    term.pixel_memory.push(F.normalize(torch.randn(40, 16), dim=1), torch.arange(40) % CLASSES)
    feats, labels, logits = _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = term(SegOutput(logits, None, feats), labels).loss
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and loss.item() > 0


def test_start_step_keeps_the_term_at_zero_while_the_memory_fills() -> None:
    term = _bound(start_step=2, max_views=4).train()
    feats, labels, logits = _batch()
    values = []
    for _ in range(3):
        values.append(term(SegOutput(logits, None, feats), labels).loss.item())
        term.after_backward()
    assert values[0] == values[1] == 0 and values[2] > 0


@pytest.mark.parametrize(("kw", "match"), [({"negatives": "hard"}, "negatives must be one of"),
                                           ({"memory": False, "negatives": "semi_hard"}, "needs memory=true"),
                                           ({"memory_size": 0}, "memory_size must be a positive integer"),
                                           ({"temperature": 0}, "pixel_contrast: temperature"),
                                           ({"stages": [5]}, r"stages=\[5\]")])
def test_bad_options_name_the_key(kw, match) -> None:
    with pytest.raises(ConfigError, match=match):
        _bound(**kw)


def test_trains_in_the_module_and_fills_the_memory_after_each_backward() -> None:
    net = SegmentationModel(3, encoder=Encoder("resnet18"), decoder=partial(HRNetV2Head, channels=16))
    term = PixelContrast(embedding_dim=16, max_views=4, memory_size=20)
    module = ContrastSegModule(net, num_classes=3, losses=[CrossEntropy(), term]).train()
    labels = ((torch.arange(96) // 32) % 3).expand(2, 64, 96).clone()
    for step in range(2):
        loss = module.training_step({"image": torch.randn(2, 3, 64, 96), "mask": labels}, step)
        loss.backward()
        module.on_after_backward()
    assert int(term.pixel_memory.count.sum()) > 0 and int(term.region_memory.count.sum()) == 2 * 2 * 3
    assert "losses.1.pixel_memory.entries" in module.state_dict()
