"""Multi-scale (Eq. 3) and cross-scale (Eq. 4) supervised contrastive losses over balanced anchor sets."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastseg.errors import AnchorLimitError
from contrastseg.losses.checks import check_input_labels, check_sampling_options, check_temperature
from contrastseg.losses.distributed import gather_anchor_sets
from contrastseg.losses.infonce import check_backend, l2_normalize, supervised_infonce
from contrastseg.losses.sampling import (
    PendingAnchors,
    draw_anchor_indices_multiscale,
    gather_pixels,
    sample_anchor_indices_multiscale,
)

__all__ = ["ContrastiveLossOutput", "MultiScaleContrastiveLoss", "PresampledAnchors", "downsample_labels"]


class ContrastiveLossOutput(NamedTuple):
    """Result of :class:`MultiScaleContrastiveLoss`.

    Attributes:
        total: ``sum_s w_s L_s + sum_p w_p L_cs`` (before the lambdas of Eq. 5).
        per_scale: one unweighted ``L_c(A_s)`` per scale (zero for scales with weight 0).
        cross_scale: one unweighted ``L_c(A_a, A_b)`` per cross-scale pair.
    """

    total: Tensor
    per_scale: list[Tensor]
    cross_scale: list[Tensor]


def downsample_labels(labels: Tensor, size: Sequence[int], stride: int | None = None) -> Tensor:
    """Nearest-neighbour labels at a feature map's size: ``labels[:, ::s, ::s]`` when that has the right shape.

    Args:
        labels: ``(B, H, W)`` full-resolution labels.
        size: ``(h, w)`` of the feature map.
        stride: the map's stride; ``None`` infers the nearest power of two of ``H / h``.
    """
    h, w = int(size[0]), int(size[1])
    height = labels.shape[-2]
    s = stride or 2 ** max(0, round(math.log2(height / h)))
    strided = labels[:, ::s, ::s]  # (B, H, W) -> (B, ceil(H/s), ceil(W/s)), exactly nearest sampling
    if strided.shape[-2:] == (h, w):
        return strided
    # Sizes that are not a stride apart: nearest interpolation (exact for labels < 2**24 in float32).
    return F.interpolate(labels[:, None].float(), size=(h, w), mode="nearest")[:, 0].to(labels.dtype)


class PresampledAnchors(NamedTuple):
    """Anchors drawn by :meth:`MultiScaleContrastiveLoss.presample` before the forward pass.

    Attributes:
        labels: the labels they were drawn from, as passed (``(B, H, W)`` or ``(B, 1, H, W)``).
        sizes: ``(h, w)`` of the label map of every used scale.
        pending: the queued draw of the used scales, in ascending order.
    """

    labels: Tensor
    sizes: dict[int, tuple[int, ...]]
    pending: PendingAnchors

    @property
    def drawn(self) -> dict[int, tuple[Tensor, Tensor]]:
        """Per used scale, flat pixel ``index`` and ``anchor_labels`` (reading them waits for the draw)."""
        return dict(zip(self.sizes, self.pending.resolve()))


class MultiScaleContrastiveLoss(nn.Module):
    """Eq. 3 + Eq. 4: per-scale supervised InfoNCE on balanced anchors, plus cross-scale pairs.

    The functional core on embeddings you project yourself (your own training loop). In a config or with
    :class:`~contrastseg.ContrastSegModule`, use the loss term :class:`~contrastseg.losses.MultiScaleContrast`
    instead: it owns the per-stage projectors, calls this loss and applies Eq. 5's lambdas.

    Args:
        scale_weights: ``w_s`` per scale, fine to coarse (the paper: 1, 0.7, 0.4, 0.1 for strides 4..32).
        cross_scale_pairs: ``(a, b)`` scale indices; rows are scale ``a``'s anchors, columns scale ``b``'s
            (the paper: (0, 3) and (0, 2)). Gradients reach both anchor sets.
        cross_scale_weights: ``w_p`` per pair (1, 1).
        temperature: ``t`` of the per-scale terms (0.1).
        cross_scale_temperature: ``t`` of the cross-scale terms; ``None`` uses ``temperature``.
        ignore_index: label never sampled.
        min_views_per_class: pixels a (image, class) pair needs to be sampled (5).
        max_views_per_class: cap on anchors per pair (2500).
        max_anchors: cap on anchors per scale (10000).
        gather_distributed: under ``torch.distributed``, sample from the global batch of all processes (anchors
            are gathered with gradients); off by default, as the paper sampled per GPU.
        sampling: ``"balanced"`` (Sec. 3.3) or ``"all"``: every labelled pixel of the scale is an anchor, so
            classes count as often as they occur (Table 7a's ``K ~ p_data``). Time and memory grow with the square
            of the anchor count; above ``all_max_anchors`` the loss raises
            :class:`~contrastseg.errors.AnchorLimitError` with the count and the memory it would need instead of
            exhausting the device.
        all_max_anchors: hard cap on the anchors of one scale with ``sampling="all"`` (40000).
        backend: InfoNCE implementation: ``"auto"`` (on CUDA the fused Triton kernels for terms up to
            ``infonce.TRITON_MAX_SIMILARITIES`` similarities, where they are faster; blockwise PyTorch otherwise),
            ``"triton"`` or ``"torch"``. Both compute the same values and gradients.

    Example:
        >>> loss = MultiScaleContrastiveLoss()
        >>> out = loss([torch.randn(2, 256, 32 // s, 32 // s) for s in (1, 2, 4, 8)], torch.randint(0, 3, (2, 128, 128)))
        >>> out.total.backward()
    """

    def __init__(
        self,
        *,
        scale_weights: Sequence[float] = (1.0, 0.7, 0.4, 0.1),
        cross_scale_pairs: Sequence[Sequence[int]] = ((0, 3), (0, 2)),
        cross_scale_weights: Sequence[float] = (1.0, 1.0),
        temperature: float = 0.1,
        cross_scale_temperature: float | None = None,
        ignore_index: int = 255,
        min_views_per_class: int = 5,
        max_views_per_class: int = 2500,
        max_anchors: int = 10000,
        gather_distributed: bool = False,
        sampling: str = "balanced",
        all_max_anchors: int = 40000,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        check_backend(backend)
        self.backend = backend
        if sampling not in ("balanced", "all"):
            raise ValueError(f"sampling must be 'balanced' or 'all', got {sampling!r}")
        if sampling == "all" and gather_distributed:
            raise ValueError("sampling='all' samples per process; it cannot be combined with gather_distributed")
        self.sampling_mode, self.all_max_anchors = sampling, int(all_max_anchors)
        pairs = [tuple(int(i) for i in p) for p in cross_scale_pairs]
        n = len(scale_weights)
        if len(cross_scale_weights) != len(pairs):
            raise ValueError(f"cross_scale_weights has {len(cross_scale_weights)} entries for {len(pairs)} pairs")
        for a, b in pairs:
            if not (0 <= a < n and 0 <= b < n) or a == b:
                raise ValueError(f"cross_scale_pairs: ({a}, {b}) must be two different scales in 0..{n - 1}")
        check_temperature(temperature)
        if cross_scale_temperature is not None:
            check_temperature(cross_scale_temperature, "cross_scale_temperature")
        check_sampling_options(ignore_index=ignore_index, min_views_per_class=min_views_per_class,
                               max_views_per_class=max_views_per_class, max_anchors=max_anchors)
        self.scale_weights = [float(w) for w in scale_weights]
        self.cross_scale_pairs = pairs
        self.cross_scale_weights = [float(w) for w in cross_scale_weights]
        self.temperature = float(temperature)
        # Honoured when set (the authors' code silently replaced it by 0.1).
        self.cross_scale_temperature = float(cross_scale_temperature or temperature)
        self.sampling = {"ignore_index": ignore_index, "min_views_per_class": min_views_per_class,
                         "max_views_per_class": max_views_per_class, "max_anchors": max_anchors}
        self.gather_distributed = gather_distributed
        # Set by ContrastHealthMonitor: the last forward's labels per scale, anchors and terms stay readable in
        # ``kept`` until the monitor takes them (references only: nothing is copied or computed for it here).
        self.keep_anchors = False
        self.kept: dict | None = None

    @property
    def used_scales(self) -> list[int]:
        """Scales some term reads (weight not 0, or in a cross-scale pair), ascending."""
        return sorted({s for s, w in enumerate(self.scale_weights) if w != 0}
                      | {s for p in self.cross_scale_pairs for s in p})

    def presample(self, labels: Tensor, *, strides: Sequence[int],
                  generator: torch.Generator | None = None) -> PresampledAnchors | None:
        """Queue the draw of the balanced anchors from the labels alone, before the model's forward pass.

        Sampling needs one host synchronisation (the anchor count sizes the output). Drawn inside the loss, after
        the forward was queued, it would wait for the whole forward and leave the device idle while the loss's
        kernels are launched; drawn before the forward, it would drain the device's queue (the previous step's
        backward) and leave the device idle while the forward is launched. Here the draw is queued and its count
        copied to the host without waiting; :meth:`forward` reads it, after the model's forward pass was queued
        behind the sampler. Pass the result to :meth:`forward`; it is used when the feature maps have the sizes
        ``labels[:, ::s, ::s]`` assumed here (otherwise the loss samples again).

        Args:
            labels: ``(B, H, W)`` (or ``(B, 1, H, W)``) integer labels at input resolution.
            strides: stride of each scale's feature map.
            generator: random source of the sampling.

        Returns:
            The drawn anchors, or ``None`` where they cannot be drawn ahead (``sampling="all"`` or
            ``gather_distributed``, which sample inside the loss).

        Raises:
            ValueError: labels of another shape, or floating labels.
        """
        given, labels = labels, check_input_labels(labels)
        if self.sampling_mode != "balanced" or self.gather_distributed:
            return None
        scales = self.used_scales
        labels_at = [labels[:, ::strides[s], ::strides[s]] for s in scales]  # (B, H, W) -> (B, ceil(H/s), ceil(W/s))
        names = [_scale_name(s, strides) for s in scales]
        pending = draw_anchor_indices_multiscale(labels_at, generator=generator, scale_names=names, **self.sampling)
        return PresampledAnchors(labels=given, sizes={s: tuple(lab.shape[-2:]) for s, lab in zip(scales, labels_at)},
                                 pending=pending)

    def forward(
        self, embeddings: Sequence[Tensor], labels: Tensor, *, strides: Sequence[int] | None = None,
        generator: torch.Generator | None = None, presampled: PresampledAnchors | None = None,
    ) -> ContrastiveLossOutput:
        """Compute the loss.

        Args:
            embeddings: one ``(B, D, h_s, w_s)`` map per scale, fine to coarse (normalised inside); the two scales
                of a cross-scale pair need the same ``D``.
            labels: ``(B, H, W)`` (or ``(B, 1, H, W)``) integer labels at input resolution, the same ``B``.
            strides: stride of each map (``None``: inferred from the sizes).
            generator: random source of the anchor sampling (on the labels' device).
            presampled: anchors drawn from these ``labels`` by :meth:`presample` (ignored when they were drawn
                from other labels or at other sizes).

        Raises:
            ValueError: a shape that does not fit (named, with the shapes), or floating labels.
        """
        given, labels = labels, self._check_inputs(embeddings, labels)
        scales = self.used_scales
        used = set(scales)
        if presampled is not None and (presampled.labels is not given or any(
                presampled.sizes.get(s) != tuple(embeddings[s].shape[-2:]) for s in scales)):
            presampled = None
        labels_at = {s: downsample_labels(labels, embeddings[s].shape[-2:], None if strides is None else strides[s])
                     for s in scales}
        anchors: dict[int, tuple[Tensor, Tensor]] = {}
        indices: dict[int, Tensor] = {}  # flat pixel indices of the anchors (not under gather_distributed)
        if self.sampling_mode == "all":
            for s in scales:
                index = indices[s] = self._all_labelled(labels_at[s], s)
                anchors[s] = (gather_pixels(embeddings[s], index, distinct=True), labels_at[s].reshape(-1)[index])
        elif self.gather_distributed:
            for s in scales:
                anchors[s] = gather_anchor_sets(embeddings[s], labels_at[s], generator=generator,
                                                scale_name=_scale_name(s, strides), **self.sampling)
        else:  # every scale in one call: one host sync and two sorts for all of them
            drawn = (presampled.pending.resolve() if presampled is not None else  # the used scales, ascending
                     sample_anchor_indices_multiscale([labels_at[s] for s in scales], generator=generator,
                                                      scale_names=[_scale_name(s, strides) for s in scales],
                                                      **self.sampling))
            for s, (index, anchor_labels) in zip(scales, drawn):
                indices[s] = index
                anchors[s] = (gather_pixels(embeddings[s], index, distinct=True), anchor_labels)
        # An exact 0 that keeps the scales no term uses in the graph (zero gradients, so DDP sees every parameter
        # used); summing an empty slice cannot pick up NaN/inf from pixels the loss never reads. Used scales are
        # connected through their anchors already (also with none), so they need no such term: its backward
        # would write a zero gradient the size of the whole map.
        unused = [e for s, e in enumerate(embeddings) if s not in used]
        zero = (sum(e.reshape(-1)[:0].float().sum() for e in unused) if unused
                else labels.new_zeros((), dtype=torch.float32))
        with torch.autocast(labels.device.type, enabled=False):  # each scale's set normalised once, in float32
            anchors = {s: (l2_normalize(z), y) for s, (z, y) in anchors.items()}
        per_scale = [
            supervised_infonce(*anchors[s], temperature=self.temperature, normalized=True,
                               backend=self.backend)
            if s in anchors and w != 0 else zero
            for s, w in enumerate(self.scale_weights)
        ]
        cross_scale = [
            supervised_infonce(*anchors[a], *anchors[b], temperature=self.cross_scale_temperature, normalized=True,
                               backend=self.backend)
            for a, b in self.cross_scale_pairs
        ]
        total = zero + sum(w * l for w, l in zip(self.scale_weights, per_scale))
        total = total + sum(w * l for w, l in zip(self.cross_scale_weights, cross_scale))
        if self.keep_anchors:
            self.kept = {"labels": labels_at, "anchors": anchors, "indices": indices, "per_scale": per_scale,
                         "cross_scale": cross_scale}
        return ContrastiveLossOutput(total=total, per_scale=per_scale, cross_scale=cross_scale)

    def _check_inputs(self, embeddings: Sequence[Tensor], labels: Tensor) -> Tensor:
        """The labels as ``(B, H, W)`` after checking every shape (Python numbers only, no host sync)."""
        if len(embeddings) != len(self.scale_weights):
            raise ValueError(f"got {len(embeddings)} embedding maps but {len(self.scale_weights)} scale_weights")
        labels = check_input_labels(labels)
        for s, e in enumerate(embeddings):
            if e.dim() != 4:
                raise ValueError(f"embeddings[{s}] must be (B, D, h, w), got shape {tuple(e.shape)}")
            if e.shape[0] != labels.shape[0]:
                raise ValueError(f"embeddings[{s}] {tuple(e.shape)} has batch {e.shape[0]} but labels "
                                 f"{tuple(labels.shape)} have batch {labels.shape[0]}")
        for a, b in self.cross_scale_pairs:
            if embeddings[a].shape[1] != embeddings[b].shape[1]:
                raise ValueError(
                    f"cross_scale_pairs ({a}, {b}): embeddings[{a}] {tuple(embeddings[a].shape)} has "
                    f"D={embeddings[a].shape[1]} but embeddings[{b}] {tuple(embeddings[b].shape)} has "
                    f"D={embeddings[b].shape[1]}; a cross-scale term compares the two scales' embeddings")
        return labels

    def _all_labelled(self, labels_s: Tensor, scale: int) -> Tensor:
        """Flat indices of every labelled pixel, grouped by class (as the balanced sampler groups its anchors, for
        the fused kernels), or :class:`AnchorLimitError` above ``all_max_anchors``."""
        flat = labels_s.reshape(-1)  # (B*h*w,)
        index = ((flat != self.sampling["ignore_index"]) & (flat >= 0)).nonzero()[:, 0]  # (N,) as the sampler
        index = index[torch.argsort(flat[index], stable=True)]  # (N,) by class, raster order within a class
        n = index.numel()
        if n > self.all_max_anchors:
            gib = 3 * 4 * n * n / 2**30  # float32 similarities, exponentials and gradients of a dense N x N
            raise AnchorLimitError(
                f"sampling='all' at scale {scale} has {n:,} labelled pixels as anchors (all_max_anchors="
                f"{self.all_max_anchors:,}): {n * n:,} similarities per term. A dense implementation (the "
                f"authors') would need about {gib:,.1f} GiB; ours computes them in blocks, so memory stays bounded "
                "but time grows as the square. Use sampling='balanced' (the paper's Sec. 3.3), smaller crops or "
                "batches, or raise all_max_anchors")
        return index


def _scale_name(scale: int, strides: Sequence[int] | None) -> str:
    return f"scale {scale}" + ("" if strides is None else f" (stride {strides[scale]})")
