"""Forward+backward time and peak extra memory of the Table 2 competitor terms against their original code.

Each of our terms is measured beside a straightforward transcription of the loss of the code its method was released
with, in the same run, on the same inputs:

- ``PixelContrast`` with a pixel and a region memory ([36], Wang et al. 2021) against ``PixelContrastLoss`` of
  tfzhou/ContrastiveSeg ``lib/loss/loss_contrast_mem.py`` (hard-anchor sampling by a Python loop over images and
  classes, ``_sample_negative``'s loop over classes, the dense N x M similarity with its masks kept for autograd) and
  the trainer's ``_dequeue_and_enqueue`` (``segmentor/trainer_contrastive.py``, a Python loop over images and
  classes), with queues of the same size (``C x memory_size x 256`` each);
- ``PixelContrast(memory=False)`` (in-batch) against ``PixelContrastLoss`` of ``lib/loss/loss_contrast.py``;
- ``RegionContrast`` ([15], Hu et al. 2021) against the loss and enqueue of hzhupku/RegionContrast
  ``pyseg/models/decoder_contrast.py``.

A step is what one training step spends on the term from the embedding map on: the forward pass, the backward pass
and the memory update (ours: ``after_backward``). The input is a fixed ``(B, 256, H/4, W/4)`` embedding map that
requires grad (our terms' projectors are replaced by ``nn.Identity``: the projector is the model's cost, not the
loss's) and fixed logits at the same resolution for the predictions (~75% of the pixels right). The original pixel
contrast normalises the whole map (its ``ProjectionHead`` ends with ``F.normalize``; the loss and the queues expect
unit rows), so its step starts with that normalisation; ours normalises the rows it uses.

The transcriptions keep the original code as it is (its loops, host synchronisations, ``eval`` lookups, dense
matrices and defects, e.g. class 0 skipped by the memory, its issues #35/#60/#66) and change only what running them
here needs: ``.cuda()`` becomes the input's device, the configuration values become arguments, labels use the
original's ignore value ``-1`` (ours: 255), and

- the original trainer slices the labels with the config's ``network.stride`` (8, wrong for HRNet's stride-4
  embeddings, its issue #28); here the embeddings' stride 4, so that it reads the pixels it means to (same cost);
- the released region code hard-codes 19 classes (``if(i<19)``, ``range(19)``); here the number of classes, so that
  the ADE20K-like case contrasts 150 queues as the method intends. Its loss is the released one, element-wise products
  ``query * queue`` (issue #5), which makes ``(256, 2 * queue_len)`` "logits" and **is not the InfoNCE our term
  computes** (dot products ``r . m``, one row per region centre): its time is reported as the original's cost of a step,
  not as the cost of the same loss. It ran one image per GPU (region centres per GPU batch = per image); here the
  images of the batch go through it one after the other, each with its own forward and backward (the work of the
  released 8 GPU x 1 image configuration, one process after the other), so its memory is one image's peak. Its
  regions come from the predictions (as released), ours from the labels (``region_labels="gt"``, the Table 2 config).

Settings are the Table 2 configs' (``experiments/ablations/t2_hrnet_*.yaml``) for both sides: pixel contrast with
temperature 0.1, base temperature 0.07, ``max_samples`` 1024, ``max_views`` 100, 5000 entries per class and memory, 10
pixels per image and class per update; region contrast with temperature 0.2 and 2975 entries per class. Memories are
full before timing (random unit rows: the original's initial state; ours filled with ``push``), so the contrast set has
its full size (pixel: ``C x 10000`` rows; region: ``C x 2975``).

    python -m contrastseg.benchmarks.table2_losses                          # CUDA if available, full paper shapes
    python -m contrastseg.benchmarks.table2_losses --device cpu             # image scale 0.25, memory scale 0.1

Cases (the paper's): Cityscapes-like, batch 8, 512x1024, 19 classes with Cityscapes' pixel imbalance; ADE20K-like,
batch 16, 512x512, 150 classes; 256-d embeddings at stride 4. ``--scale`` shrinks the image side (default 1 on CUDA,
0.25 on CPU), ``--memory-scale`` the memories (default 1 on CUDA, 0.1 on CPU: the original's dense N x M matrices,
about a dozen kept for autograd, take ~10 GB with the full Cityscapes-like memory and ~50 GB with the full ADE20K-like
one; the CPU defaults need ~8 GB). Memory on CUDA is ``max_memory_allocated`` above the inputs (an
out-of-memory step prints ``OOM``); on CPU time and memory are measured in two fresh processes, the memory one with
glibc returning freed blocks to the system (``contrastseg/benchmarks/_harness.py``). Both include the input embeddings' gradient
(as large as the map, the same on both sides).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import math
import platform

import torch
import torch.nn as nn
import torch.nn.functional as F

from contrastseg.benchmarks._harness import cpu_time_and_memory, timed
from contrastseg.benchmarks.contrastive_loss import realistic_labels
from contrastseg.losses import LossContext, PixelContrast, RegionContrast
from contrastseg.models.segmentation import SegOutput

STRIDE = 4
DIM = 256
CASES = (("Cityscapes-like", 8, 512, 1024, 19), ("ADE20K-like", 16, 512, 512, 150))
TERMS = ("pixel-memory", "pixel-in-batch", "region")
TERM_NAMES = {"pixel-memory": "PixelContrast, pixel + region memory", "pixel-in-batch": "PixelContrast, in-batch",
              "region": "RegionContrast"}
# The Table 2 configs' settings (experiments/ablations/t2_hrnet_{pixel,region_pixel,region}.yaml), both sides.
PIXEL = dict(temperature=0.1, base_temperature=0.07, max_samples=1024, max_views=100)
PIXEL_MEMORY_SIZE, PIXEL_UPDATE_FREQ = 5000, 10
REGION_TEMPERATURE, REGION_MEMORY_SIZE = 0.2, 2975


# ----------------------------------------------------------------------------------------- the original code
# tfzhou/ContrastiveSeg lib/loss/loss_contrast.py (in-batch) and lib/loss/loss_contrast_mem.py (memory); the two files'
# _hard_anchor_sampling are the same. The configer reads became constructor arguments.


class OriginalPixelContrastLoss(nn.Module):
    """``PixelContrastLoss`` of ``lib/loss/loss_contrast.py`` (the in-batch loss), as released."""

    def __init__(self, temperature, base_temperature, max_samples, max_views, ignore_label=-1):
        super().__init__()
        self.temperature = temperature
        self.base_temperature = base_temperature
        self.ignore_label = ignore_label
        self.max_samples = max_samples
        self.max_views = max_views

    def _hard_anchor_sampling(self, X, y_hat, y):
        batch_size, feat_dim = X.shape[0], X.shape[-1]

        classes = []
        total_classes = 0
        for ii in range(batch_size):
            this_y = y_hat[ii]
            this_classes = torch.unique(this_y)
            this_classes = [x for x in this_classes if x != self.ignore_label]
            this_classes = [x for x in this_classes if (this_y == x).nonzero().shape[0] > self.max_views]

            classes.append(this_classes)
            total_classes += len(this_classes)

        if total_classes == 0:
            return None, None

        n_view = self.max_samples // total_classes
        n_view = min(n_view, self.max_views)

        X_ = torch.zeros((total_classes, n_view, feat_dim), dtype=torch.float).to(X.device)
        y_ = torch.zeros(total_classes, dtype=torch.float).to(X.device)

        X_ptr = 0
        for ii in range(batch_size):
            this_y_hat = y_hat[ii]
            this_y = y[ii]
            this_classes = classes[ii]

            for cls_id in this_classes:
                hard_indices = ((this_y_hat == cls_id) & (this_y != cls_id)).nonzero()
                easy_indices = ((this_y_hat == cls_id) & (this_y == cls_id)).nonzero()

                num_hard = hard_indices.shape[0]
                num_easy = easy_indices.shape[0]

                if num_hard >= n_view / 2 and num_easy >= n_view / 2:
                    num_hard_keep = n_view // 2
                    num_easy_keep = n_view - num_hard_keep
                elif num_hard >= n_view / 2:
                    num_easy_keep = num_easy
                    num_hard_keep = n_view - num_easy_keep
                elif num_easy >= n_view / 2:
                    num_hard_keep = num_hard
                    num_easy_keep = n_view - num_hard_keep
                else:
                    raise Exception('this shoud be never touched! {} {} {}'.format(num_hard, num_easy, n_view))

                perm = torch.randperm(num_hard)
                hard_indices = hard_indices[perm[:num_hard_keep]]
                perm = torch.randperm(num_easy)
                easy_indices = easy_indices[perm[:num_easy_keep]]
                indices = torch.cat((hard_indices, easy_indices), dim=0)

                X_[X_ptr, :, :] = X[ii, indices, :].squeeze(1)
                y_[X_ptr] = cls_id
                X_ptr += 1

        return X_, y_

    def _contrastive(self, feats_, labels_):
        anchor_num, n_view = feats_.shape[0], feats_.shape[1]

        labels_ = labels_.contiguous().view(-1, 1)
        mask = torch.eq(labels_, torch.transpose(labels_, 0, 1)).float().to(feats_.device)

        contrast_count = n_view
        contrast_feature = torch.cat(torch.unbind(feats_, dim=1), dim=0)

        anchor_feature = contrast_feature
        anchor_count = contrast_count

        anchor_dot_contrast = torch.div(torch.matmul(anchor_feature, torch.transpose(contrast_feature, 0, 1)),
                                        self.temperature)
        logits_max, _ = torch.max(anchor_dot_contrast, dim=1, keepdim=True)
        logits = anchor_dot_contrast - logits_max.detach()

        mask = mask.repeat(anchor_count, contrast_count)
        neg_mask = 1 - mask

        logits_mask = torch.ones_like(mask).scatter_(1,
                                                     torch.arange(anchor_num * anchor_count).view(-1, 1).to(
                                                         mask.device),
                                                     0)
        mask = mask * logits_mask

        neg_logits = torch.exp(logits) * neg_mask
        neg_logits = neg_logits.sum(1, keepdim=True)

        exp_logits = torch.exp(logits)

        log_prob = logits - torch.log(exp_logits + neg_logits)

        mean_log_prob_pos = (mask * log_prob).sum(1) / mask.sum(1)

        loss = - (self.temperature / self.base_temperature) * mean_log_prob_pos
        loss = loss.mean()

        return loss

    def _prepare(self, feats, labels, predict):
        labels = labels.unsqueeze(1).float().clone()
        labels = torch.nn.functional.interpolate(labels,
                                                 (feats.shape[2], feats.shape[3]), mode='nearest')
        labels = labels.squeeze(1).long()
        assert labels.shape[-1] == feats.shape[-1], '{} {}'.format(labels.shape, feats.shape)

        batch_size = feats.shape[0]

        labels = labels.contiguous().view(batch_size, -1)
        predict = predict.contiguous().view(batch_size, -1)
        feats = feats.permute(0, 2, 3, 1)
        feats = feats.contiguous().view(feats.shape[0], -1, feats.shape[-1])

        return self._hard_anchor_sampling(feats, labels, predict)

    def forward(self, feats, labels=None, predict=None):
        feats_, labels_ = self._prepare(feats, labels, predict)
        loss = self._contrastive(feats_, labels_)
        return loss


class OriginalPixelContrastLossMem(OriginalPixelContrastLoss):
    """``PixelContrastLoss`` of ``lib/loss/loss_contrast_mem.py`` (the memory loss), as released: the contrast set is
    the memory only (``_sample_negative``), class 0 skipped with its rows left as zero vectors labelled 0 (issues
    #35/#60/#66), and ``logits_mask`` drops memory column ``j`` from anchor ``j``'s positives (issue #16)."""

    def _sample_negative(self, Q):
        class_num, cache_size, feat_size = Q.shape

        X_ = torch.zeros((class_num * cache_size, feat_size)).float().to(Q.device)
        y_ = torch.zeros((class_num * cache_size, 1)).float().to(Q.device)
        sample_ptr = 0
        for ii in range(class_num):
            if ii == 0:
                continue
            this_q = Q[ii, :cache_size, :]

            X_[sample_ptr:sample_ptr + cache_size, ...] = this_q
            y_[sample_ptr:sample_ptr + cache_size, ...] = ii
            sample_ptr += cache_size

        return X_, y_

    def _contrastive(self, X_anchor, y_anchor, queue=None):
        anchor_num, n_view = X_anchor.shape[0], X_anchor.shape[1]

        y_anchor = y_anchor.contiguous().view(-1, 1)
        anchor_count = n_view
        anchor_feature = torch.cat(torch.unbind(X_anchor, dim=1), dim=0)

        if queue is not None:
            X_contrast, y_contrast = self._sample_negative(queue)
            y_contrast = y_contrast.contiguous().view(-1, 1)
            contrast_count = 1
            contrast_feature = X_contrast
        else:
            y_contrast = y_anchor
            contrast_count = n_view
            contrast_feature = torch.cat(torch.unbind(X_anchor, dim=1), dim=0)

        mask = torch.eq(y_anchor, y_contrast.T).float().to(X_anchor.device)

        anchor_dot_contrast = torch.div(torch.matmul(anchor_feature, contrast_feature.T),
                                        self.temperature)
        logits_max, _ = torch.max(anchor_dot_contrast, dim=1, keepdim=True)
        logits = anchor_dot_contrast - logits_max.detach()

        mask = mask.repeat(anchor_count, contrast_count)
        neg_mask = 1 - mask

        logits_mask = torch.ones_like(mask).scatter_(1,
                                                     torch.arange(anchor_num * anchor_count).view(-1, 1).to(
                                                         mask.device),
                                                     0)

        mask = mask * logits_mask

        neg_logits = torch.exp(logits) * neg_mask
        neg_logits = neg_logits.sum(1, keepdim=True)

        exp_logits = torch.exp(logits)

        log_prob = logits - torch.log(exp_logits + neg_logits)

        mean_log_prob_pos = (mask * log_prob).sum(1) / mask.sum(1)

        loss = - (self.temperature / self.base_temperature) * mean_log_prob_pos
        loss = loss.mean()

        return loss

    def forward(self, feats, labels=None, predict=None, queue=None):
        feats_, labels_ = self._prepare(feats, labels, predict)
        loss = self._contrastive(feats_, labels_, queue=queue)
        return loss


def original_dequeue_and_enqueue(keys, labels, segment_queue, segment_queue_ptr, pixel_queue, pixel_queue_ptr, *,
                                 memory_size, pixel_update_freq, network_stride):
    """``Trainer._dequeue_and_enqueue`` of ``segmentor/trainer_contrastive.py``, as released (its pointer and index
    defects included: pointer +1 instead of +K, issues #18/#55; pixels of any class, #65); ``keys`` are the
    normalised embeddings ``(B, 256, h, w)``, ``labels`` the full-size labels (ignore -1)."""
    batch_size = keys.shape[0]
    feat_dim = keys.shape[1]

    labels = labels[:, ::network_stride, ::network_stride]

    for bs in range(batch_size):
        this_feat = keys[bs].contiguous().view(feat_dim, -1)
        this_label = labels[bs].contiguous().view(-1)
        this_label_ids = torch.unique(this_label)
        this_label_ids = [x for x in this_label_ids if x > 0]

        for lb in this_label_ids:
            idxs = (this_label == lb).nonzero()

            # segment enqueue and dequeue
            feat = torch.mean(this_feat[:, idxs], dim=1).squeeze(1)
            ptr = int(segment_queue_ptr[lb])
            segment_queue[lb, ptr, :] = nn.functional.normalize(feat.view(-1), p=2, dim=0)
            segment_queue_ptr[lb] = (segment_queue_ptr[lb] + 1) % memory_size

            # pixel enqueue and dequeue
            num_pixel = idxs.shape[0]
            perm = torch.randperm(num_pixel)
            K = min(num_pixel, pixel_update_freq)
            feat = this_feat[:, perm[:K]]
            feat = torch.transpose(feat, 0, 1)
            ptr = int(pixel_queue_ptr[lb])

            if ptr + K >= memory_size:
                pixel_queue[lb, -K:, :] = nn.functional.normalize(feat, p=2, dim=1)
                pixel_queue_ptr[lb] = 0
            else:
                pixel_queue[lb, ptr:ptr + K, :] = nn.functional.normalize(feat, p=2, dim=1)
                pixel_queue_ptr[lb] = (pixel_queue_ptr[lb] + 1) % memory_size


class OriginalPixelMemory(nn.Module):
    """The memory state of ``HRNet_W48_MEM`` (``lib/models/nets/hrnet.py``): two queues ``(C, memory_size, 256)`` of
    random unit rows (its initial state, "full" for the loss) and per-class pointers."""

    def __init__(self, num_classes, memory_size, dim=DIM):
        super().__init__()
        self.register_buffer("segment_queue", torch.randn(num_classes, memory_size, dim))
        self.segment_queue = nn.functional.normalize(self.segment_queue, p=2, dim=2)
        self.register_buffer("segment_queue_ptr", torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer("pixel_queue", torch.randn(num_classes, memory_size, dim))
        self.pixel_queue = nn.functional.normalize(self.pixel_queue, p=2, dim=2)
        self.register_buffer("pixel_queue_ptr", torch.zeros(num_classes, dtype=torch.long))


def original_pixel_memory_step(criterion, memory, embed, seg, target, *, memory_size, pixel_update_freq,
                               network_stride=STRIDE):
    """One step of the released memory method from the projector's output: the head's normalisation, the loss
    (``ContrastCELoss``: the queues concatenated, predictions, ``PixelContrastLoss``), the enqueue of the detached
    embeddings (before the backward pass, as the trainer), the backward pass."""
    embed = F.normalize(embed, p=2, dim=1)  # ProjectionHead's last operation
    queue = torch.cat((memory.segment_queue, memory.pixel_queue), dim=1)
    _, predict = torch.max(seg, 1)
    loss = criterion(embed, target, predict, queue)
    original_dequeue_and_enqueue(embed.detach(), target, memory.segment_queue, memory.segment_queue_ptr,
                                 memory.pixel_queue, memory.pixel_queue_ptr, memory_size=memory_size,
                                 pixel_update_freq=pixel_update_freq, network_stride=network_stride)
    loss.backward()
    return loss


def original_pixel_in_batch_step(criterion, embed, seg, target):
    """One step of the released in-batch method from the projector's output (normalisation, loss, backward)."""
    embed = F.normalize(embed, p=2, dim=1)
    _, predict = torch.max(seg, 1)
    loss = criterion(embed, target, predict)
    loss.backward()
    return loss


class OriginalRegionContrast(nn.Module):
    """The region contrast of hzhupku/RegionContrast ``dec_deeplabv3_contrast`` (``pyseg/models/decoder_contrast.py``)
    from its head's output ``fea`` and logits ``res`` on: ``construct_region``, the loss, ``_dequeue_and_enqueue``.

    As released except for the number of classes, which replaces its hard-coded 19. **Its loss is not an InfoNCE**:
    ``query.unsqueeze(1) * queue`` is an element-wise product (issue #5), so the "logits" are ``(256, 2 * queue_len)``
    with the 256 feature dimensions as samples and the other classes' queues summed into one; it is timed as the
    original's cost of a step, not as the loss :class:`~contrastseg.losses.RegionContrast` computes.
    """

    def __init__(self, num_classes=19, inner_planes=256, temperature=0.2, queue_len=2975):
        super().__init__()
        self.temperature = temperature
        self.queue_len = queue_len
        self.num_classes = num_classes
        self.criterion = nn.CrossEntropyLoss()

        for i in range(num_classes):
            self.register_buffer("queue" + str(i), torch.randn(inner_planes, self.queue_len))
            self.register_buffer("ptr" + str(i), torch.zeros(1, dtype=torch.long))
            setattr(self, "queue" + str(i), nn.functional.normalize(getattr(self, "queue" + str(i)), dim=0))

    def _dequeue_and_enqueue(self, keys, vals, cat, bs):
        if cat not in vals:
            return
        keys = keys[list(vals).index(cat)]
        batch_size = bs
        ptr = int(eval("self.ptr" + str(cat)))
        eval("self.queue" + str(cat))[:, ptr] = keys
        ptr = (ptr + batch_size) % self.queue_len
        eval("self.ptr" + str(cat))[0] = ptr

    def construct_region(self, fea, pred):
        bs = fea.shape[0]
        pred = pred.max(1)[1].squeeze().view(bs, -1)
        val = torch.unique(pred)
        fea = fea.squeeze()
        fea = fea.view(bs, 256, -1).permute(1, 0, 2)

        new_fea = fea[:, pred == val[0]].mean(1).unsqueeze(0)
        for i in val[1:]:
            if (i < self.num_classes):
                class_fea = fea[:, pred == i].mean(1).unsqueeze(0)
                new_fea = torch.cat((new_fea, class_fea), dim=0)
        val = torch.tensor([i for i in val if i < self.num_classes])
        return new_fea, val.to(fea.device)

    def _compute_contrast_loss(self, l_pos, l_neg):
        N = l_pos.size(0)
        logits = torch.cat((l_pos, l_neg), dim=1)
        logits /= self.temperature
        labels = torch.zeros((N,), dtype=torch.long).to(l_pos.device)
        return self.criterion(logits, labels)

    def forward(self, fea, res):
        bs = fea.shape[0]
        keys, vals = self.construct_region(fea, res)  # keys: N,256   vals: N,  N is the category number in this batch
        keys = nn.functional.normalize(keys, dim=1)
        contrast_loss = 0

        for cls_ind in range(self.num_classes):
            if cls_ind in vals:
                query = keys[list(vals).index(cls_ind)]  # 256,
                l_pos = query.unsqueeze(1) * eval("self.queue" + str(cls_ind)).clone().detach()  # 256, N1
                all_ind = [m for m in range(self.num_classes)]
                l_neg = 0
                tmp = all_ind.copy()
                tmp.remove(cls_ind)
                for cls_ind2 in tmp:
                    l_neg += query.unsqueeze(1) * eval("self.queue" + str(cls_ind2)).clone().detach()
                contrast_loss += self._compute_contrast_loss(l_pos, l_neg)
            else:
                continue
        for i in range(self.num_classes):
            self._dequeue_and_enqueue(keys, vals, i, bs)
        return res, contrast_loss


def original_region_step(module, fea, res):
    """The released configuration's step on a batch: one image per GPU, so each image through ``module`` (regions,
    loss, enqueue) and its own backward pass, one after the other."""
    for b in range(fea.shape[0]):
        _, loss = module(fea[b:b + 1], res[b:b + 1])
        if torch.is_tensor(loss):
            loss.backward()


# ----------------------------------------------------------------------------------------- inputs and our terms


def case_size(case, scale):
    """``(H, W)`` of a case's images at ``scale`` (multiples of 32, as the other benchmarks)."""
    return int(case[2] * scale) // 32 * 32, int(case[3] * scale) // 32 * 32


def make_inputs(case, scale, device, seed=0):
    """Labels ``(B, H, W)`` (255 = ignore), the embedding map ``(B, 256, H/4, W/4)`` requiring grad and logits
    ``(B, C, H/4, W/4)`` whose argmax is right at ~75% of the labelled pixels."""
    batch, classes = case[1], case[4]
    h, w = case_size(case, scale)
    labels = realistic_labels(batch, h, w, classes, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    small = labels[:, ::STRIDE, ::STRIDE]
    wrong = torch.rand(small.shape, generator=g) < 0.25
    predicted = torch.where(wrong | (small == 255), torch.randint(0, classes, small.shape, generator=g), small)
    logits = torch.randn(batch, classes, *small.shape[1:], generator=g) * 0.1
    logits.scatter_add_(1, predicted[:, None], torch.ones_like(predicted[:, None], dtype=torch.float))
    emb = torch.randn(batch, DIM, *small.shape[1:], generator=g)
    return labels.to(device), emb.to(device).requires_grad_(), logits.to(device)


def _unit_rows(n, g):
    return F.normalize(torch.randn(n, DIM, generator=g), dim=1)


def our_term(term, num_classes, device, *, memory_scale=1.0, max_views=PIXEL["max_views"], seed=2):
    """Our term, bound to a stride-4 256-channel map, projector replaced by ``nn.Identity``, memories full of random
    unit rows."""
    g = torch.Generator().manual_seed(seed)
    if term == "region":
        size = scaled_size(REGION_MEMORY_SIZE, memory_scale)
        module = RegionContrast(memory_size=size, temperature=REGION_TEMPERATURE)
    else:
        size = scaled_size(PIXEL_MEMORY_SIZE, memory_scale)
        module = PixelContrast(**{**PIXEL, "max_views": max_views}, memory=term == "pixel-memory", memory_size=size,
                               pixels_per_update=PIXEL_UPDATE_FREQ, region_memory=True)
    module.bind(LossContext(num_classes=num_classes, ignore_index=255, feature_channels=(DIM,),
                            feature_strides=(STRIDE,)))
    module.projector = nn.Identity()
    module.to(device)
    classes = torch.arange(num_classes).repeat_interleave(size)
    memories = [module.memory] if term == "region" else [module.pixel_memory, module.region_memory]
    for memory in memories:
        if memory is not None:
            memory.push(_unit_rows(num_classes * size, g).to(device), classes.to(device))
    return module


def scaled_size(size, memory_scale):
    return max(1, round(size * memory_scale))


# ----------------------------------------------------------------------------------------- measurement


def _step(term, impl, case, scale, device, memory_scale, max_views):
    """The timed step and the input map (whose gradient is cleared before every step)."""
    labels, emb, logits = make_inputs(case, scale, device)
    classes = case[4]
    if impl == "ours":
        module = our_term(term, classes, device, memory_scale=memory_scale, max_views=max_views)
        output = SegOutput(logits=logits, aux_logits=None, features=[emb])

        def step():
            module(output, labels).loss.backward()
            module.after_backward()

        return step, emb
    target = labels.masked_fill(labels == 255, -1)  # the original's ignore label
    torch.manual_seed(3)  # the original's queues: random unit rows
    if term == "region":
        module = OriginalRegionContrast(classes, DIM, REGION_TEMPERATURE,
                                        scaled_size(REGION_MEMORY_SIZE, memory_scale)).to(device)
        return (lambda: original_region_step(module, emb, logits)), emb
    settings = {**PIXEL, "max_views": max_views}
    if term == "pixel-in-batch":
        criterion = OriginalPixelContrastLoss(**settings)
        return (lambda: original_pixel_in_batch_step(criterion, emb, logits, target)), emb
    size = scaled_size(PIXEL_MEMORY_SIZE, memory_scale)
    criterion = OriginalPixelContrastLossMem(**settings)
    memory = OriginalPixelMemory(classes, size).to(device)
    return (lambda: original_pixel_memory_step(criterion, memory, emb, logits, target, memory_size=size,
                                               pixel_update_freq=PIXEL_UPDATE_FREQ)), emb


def _measure(term, impl, case, scale, device, repeats, memory_scale=1.0, max_views=PIXEL["max_views"],
             threads=None):
    """Median milliseconds and peak extra MiB of ``impl`` (``"ours"`` or ``"original"``) of ``term`` on ``case``,
    in this process."""
    if threads:  # here, not only in the parent: CPU measurements run in fresh processes
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    step, emb = _step(term, impl, case, scale, device, memory_scale, max_views)

    def clear_grads():
        emb.grad = None

    seconds, mib = timed(step, device, repeats, before=clear_grads)
    return seconds * 1000, mib


def measure(term, impl, case, scale, device, repeats, memory_scale=1.0, max_views=PIXEL["max_views"],
            threads=None):
    """CUDA in this process (``(nan, nan)`` when out of memory); CPU in fresh processes, time and memory apart."""
    if device != "cuda":
        return cpu_time_and_memory(_measure, term, impl, case, scale, device, repeats=repeats,
                                   memory_scale=memory_scale, max_views=max_views, threads=threads)
    try:
        return _measure(term, impl, case, scale, device, repeats, memory_scale, max_views)
    except torch.cuda.OutOfMemoryError:
        return math.nan, math.nan
    finally:
        torch.cuda.empty_cache()


def device_name(device):
    """The GPU's name, or the CPU model and the thread count."""
    if device == "cuda":
        return torch.cuda.get_device_name()
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{model or 'CPU'}, {torch.get_num_threads()} threads"


def _fmt(value, digits):
    return "OOM" if math.isnan(value) else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--scale", type=float, default=None, help="image side scale (default 1 on CUDA, 0.25 on CPU)")
    parser.add_argument("--memory-scale", type=float, default=None,
                        help="memory entries per class scale (default 1 on CUDA, 0.1 on CPU)")
    parser.add_argument("--max-views", type=int, default=PIXEL["max_views"],
                        help="pixel contrast's max_views, both sides (100; lower it for tiny scales, where no class "
                             "has more than 100 pixels in an image and the original fails)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--terms", nargs="*", default=list(TERMS), choices=TERMS)
    parser.add_argument("--cases", nargs="*", default=[c[0] for c in CASES], choices=[c[0] for c in CASES])
    args = parser.parse_args()
    scale = args.scale or (1.0 if args.device == "cuda" else 0.25)
    memory_scale = args.memory_scale or (1.0 if args.device == "cuda" else 0.1)
    repeats = args.repeats or (20 if args.device == "cuda" else 5)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device: {device_name(args.device)}; torch {torch.__version__}; "
          f"contrastseg {importlib.metadata.version('contrastseg')}; {datetime.date.today().isoformat()}; "
          f"image scale {scale}; memory scale {memory_scale}; max_views {args.max_views}; median of {repeats}")
    print("| case | term | ours ms | original ms | speed-up | ours MiB | original MiB |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for case in (c for c in CASES if c[0] in args.cases):
        h, w = case_size(case, scale)
        label = f"{case[0]} {case[1]}x{h}x{w}, {case[4]} classes"
        for term in args.terms:
            ours, original = (measure(term, impl, case, scale, args.device, repeats, memory_scale, args.max_views,
                                      args.threads) for impl in ("ours", "original"))
            speedup = original[0] / ours[0]
            speedup = "-" if math.isnan(speedup) else f"{speedup:.1f}x"
            print(f"| {label} | {TERM_NAMES[term]} | {_fmt(ours[0], 1)} | {_fmt(original[0], 1)} | {speedup} | "
                  f"{_fmt(ours[1], 0)} | {_fmt(original[1], 0)} |", flush=True)


if __name__ == "__main__":
    main()
