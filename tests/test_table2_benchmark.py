"""contrastseg/benchmarks/table2_losses.py: every measurement runs (tiny shapes, one repeat), and our PixelContrast agrees in value
with the transcribed original loss on inputs where the two are meant to agree."""

import math

import pytest
import torch
import torch.nn.functional as F

from contrastseg.benchmarks import table2_losses as t2
from contrastseg.losses import ClassMemory, LossContext, PixelContrast, supervised_infonce
from contrastseg.models.segmentation import SegOutput

TEMPERATURE, BASE_TEMPERATURE = t2.PIXEL["temperature"], t2.PIXEL["base_temperature"]


@pytest.mark.slow
@pytest.mark.parametrize("term", t2.TERMS)
def test_every_measurement_runs(term) -> None:
    cases = [("Cityscapes-like", 2, 512, 1024, 19)] + ([("ADE20K-like", 1, 512, 512, 150)] if term == "region" else [])
    for case in cases:  # ADE20K-like: the region transcription with 150 classes instead of its hard-coded 19
        for impl in ("ours", "original"):
            ms, mib = t2._measure(term, impl, case, 0.0625, "cpu", 1, memory_scale=0.02, max_views=10)
            assert math.isfinite(ms) and ms > 0, (term, impl, case[0])
            assert math.isfinite(mib) and mib >= 0, (term, impl, case[0])  # in-process CPU growth may be 0


def _original_queue(num_classes, size, seed=0):
    """The original's two queues ``(C, size, D)`` of random unit rows."""
    g = torch.Generator().manual_seed(seed)
    return [F.normalize(torch.randn(num_classes, size, t2.DIM, generator=g), dim=2) for _ in range(2)]


def _fill_like_original(pixel_memory, region_memory, segment_queue, pixel_queue):
    """Our memories holding what the original's ``_sample_negative`` contrasts: the queues' rows of classes >= 1 and,
    for class 0, which it skips, as many zero rows labelled 0 as it leaves at the end of its contrast set
    (ContrastiveSeg issues #35/#60/#66)."""
    c, size, d = pixel_queue.shape
    labels = torch.arange(c).repeat_interleave(size)
    for memory, queue in ((pixel_memory, pixel_queue), (region_memory, segment_queue)):
        rows = queue.clone()
        rows[0] = 0.0
        memory.push(rows.reshape(c * size, d), labels)


def test_infonce_cores_agree_on_identical_anchor_sets() -> None:
    """Original ``_contrastive(X_anchor, y_anchor, queue)`` == ours ``supervised_infonce`` times t / base_t on the
    same anchors and the same contrast set, values and anchor gradients. Its issue #16 (the original drops contrast
    column ``j`` from anchor ``j``'s positives) is made a no-op: no anchor has class 1, whose rows are the first
    ``2 * size`` columns, and there are fewer anchors than that; the class-0 zero rows it contrasts are reproduced in
    our memory."""
    num_classes, size, groups, n_view = 7, 40, 10, 6
    segment_queue, pixel_queue = _original_queue(num_classes, size)
    g = torch.Generator().manual_seed(1)
    x_anchor = F.normalize(torch.randn(groups, n_view, t2.DIM, generator=g), dim=2).requires_grad_()
    y_anchor = torch.randint(2, num_classes, (groups,), generator=g).float()
    assert groups * n_view <= 2 * size
    original = t2.OriginalPixelContrastLossMem(TEMPERATURE, BASE_TEMPERATURE, 1024, 100)
    expected = original._contrastive(x_anchor, y_anchor, torch.cat((segment_queue, pixel_queue), dim=1))
    (expected_grad,) = torch.autograd.grad(expected, x_anchor)

    pixel, region = (ClassMemory(num_classes=num_classes, size=size, dim=t2.DIM) for _ in range(2))
    _fill_like_original(pixel, region, segment_queue, pixel_queue)
    rows, row_labels = (torch.cat(parts) for parts in zip(pixel.contents(), region.contents()))
    anchors = torch.cat(torch.unbind(x_anchor, dim=1))  # the original's view-major order
    ours = supervised_infonce(anchors, y_anchor.long().repeat(n_view), rows, row_labels, temperature=TEMPERATURE,
                              normalized=True, backend="torch") * (TEMPERATURE / BASE_TEMPERATURE)
    (ours_grad,) = torch.autograd.grad(ours, x_anchor)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours_grad, expected_grad, rtol=1e-4, atol=1e-7)


def _piecewise_constant_inputs(num_classes=7, batch=2, side=16, seed=0):
    """Labels (B, 4*side, 4*side) of classes 2..C-1 in quadrants (plus 255s), an embedding map (B, D, side, side)
    that is constant on every (image, class) pair and random logits: whichever pixels an anchor sampler draws of a
    pair, the anchors are the same rows, so two samplers that draw the same number per pair give the same loss."""
    g = torch.Generator().manual_seed(seed)
    half = side // 2
    small = torch.empty(batch, side, side, dtype=torch.long)
    for b in range(batch):
        classes = torch.randperm(num_classes - 2, generator=g)[:4] + 2
        for q, c in enumerate(classes.tolist()):
            small[b, (q // 2) * half:(q // 2 + 1) * half, (q % 2) * half:(q % 2 + 1) * half] = c
    small[torch.rand(small.shape, generator=g) < 0.1] = 255
    vectors = torch.randn(batch, num_classes + 1, t2.DIM, generator=g)  # per (image, class); the last: ignore
    index = small.masked_fill(small == 255, num_classes)
    # (side, side, D) -> (D, side, side) per image
    emb = torch.stack([vectors[b, index[b]].permute(2, 0, 1) for b in range(batch)])
    labels = small.repeat_interleave(4, 1).repeat_interleave(4, 2)  # nearest downsampling by 4 gives `small` back
    logits = torch.randn(batch, num_classes, side, side, generator=g)
    return labels, emb.requires_grad_(), logits, small


def _pair_sums(grad, small, num_classes):
    """Sum of the gradient over the pixels of every (image, class) pair: ``(B * (C + 1), D)``."""
    b, d = grad.shape[:2]
    key = torch.arange(b)[:, None, None] * (num_classes + 1) + small.masked_fill(small == 255, num_classes)
    key = key.reshape(-1)
    rows = grad.permute(0, 2, 3, 1).reshape(-1, d)
    return torch.zeros(b * (num_classes + 1), d).index_add_(0, key, rows)


def _our_pixel_contrast(num_classes, memory, max_samples, max_views, size=None):
    term = PixelContrast(temperature=TEMPERATURE, base_temperature=BASE_TEMPERATURE, max_samples=max_samples,
                         max_views=max_views, memory=memory, memory_size=size or 1, region_memory=True)
    term.bind(LossContext(num_classes=num_classes, ignore_index=255, feature_channels=(t2.DIM,),
                          feature_strides=(t2.STRIDE,)))
    term.projector = torch.nn.Identity()
    return term


@pytest.mark.parametrize("memory", [True, False], ids=["memory", "in-batch"])
def test_pixel_contrast_agrees_with_the_original_loss(memory) -> None:
    """The whole term (labels and predictions downsampled, hard-anchor sampling, InfoNCE, t / base_t) against the
    original ``PixelContrastLoss.forward`` on the same inputs: same value, same gradient per (image, class) pair.
    Memory: the original's queues in our memories as in the core test (class-0 zero rows reproduced, issue #16 a
    no-op: 8 pairs x 8 views = 64 anchors < 2 x 40 class-1 columns, no class 0 or 1 in the labels)."""
    num_classes, size, max_samples, max_views = 7, 40, 64, 8
    labels, emb, logits, small = _piecewise_constant_inputs(num_classes)
    target = labels.masked_fill(labels == 255, -1)
    predict = logits.argmax(1)
    if memory:
        segment_queue, pixel_queue = _original_queue(num_classes, size)
        original = t2.OriginalPixelContrastLossMem(TEMPERATURE, BASE_TEMPERATURE, max_samples, max_views)
        expected = original(F.normalize(emb, dim=1), target, predict, torch.cat((segment_queue, pixel_queue), dim=1))
    else:
        original = t2.OriginalPixelContrastLoss(TEMPERATURE, BASE_TEMPERATURE, max_samples, max_views)
        expected = original(F.normalize(emb, dim=1), target, predict)
    (expected_grad,) = torch.autograd.grad(expected, emb)

    term = _our_pixel_contrast(num_classes, memory, max_samples, max_views, size)
    if memory:
        _fill_like_original(term.pixel_memory, term.region_memory, segment_queue, pixel_queue)
    out = term(SegOutput(logits=logits, aux_logits=None, features=[emb]), labels)
    assert out.logs["pixel_contrast_anchors"].item() == 64  # 8 pairs x min(64 // 8, 8) views, both samplers
    (ours_grad,) = torch.autograd.grad(out.loss, emb)
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(_pair_sums(ours_grad, small, num_classes),
                               _pair_sums(expected_grad, small, num_classes), rtol=1e-4, atol=1e-6)


def test_region_memory_update_agrees_with_the_original_segment_queue() -> None:
    """After a step, our region memory's newest rows of class c >= 1 are the original's segment-queue entries: the
    normalised mean of the unit embeddings of every image's class-c pixels (labels sliced at the embeddings' stride),
    in image order. (The pixel queue cannot agree: the original enqueues pixels of any class, its issue #65.)"""
    num_classes, size = 7, 40
    labels, _, logits, _ = _piecewise_constant_inputs(num_classes)
    emb = torch.randn(2, t2.DIM, 16, 16, generator=torch.Generator().manual_seed(5))  # not constant per pair
    segment_queue, pixel_queue = _original_queue(num_classes, size)
    segment_ptr, pixel_ptr = torch.zeros(num_classes, dtype=torch.long), torch.zeros(num_classes, dtype=torch.long)
    t2.original_dequeue_and_enqueue(F.normalize(emb, dim=1), labels.masked_fill(labels == 255, -1), segment_queue,
                                    segment_ptr, pixel_queue, pixel_ptr, memory_size=size,
                                    pixel_update_freq=10, network_stride=t2.STRIDE)
    term = _our_pixel_contrast(num_classes, True, 64, 8, size)
    term(SegOutput(logits=logits, aux_logits=None, features=[emb.requires_grad_()]), labels)
    term.after_backward()
    assert int(segment_ptr.sum()) == 8  # 4 classes in each of the 2 images
    for c in range(1, num_classes):
        k = int(segment_ptr[c])
        assert int(term.region_memory.count[c]) == k
        if k:
            torch.testing.assert_close(term.region_memory.queue(c)[-k:], segment_queue[c, :k], rtol=1e-5, atol=1e-6)
