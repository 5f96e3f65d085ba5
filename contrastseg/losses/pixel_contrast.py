"""Pixel contrast with class-wise memories, Wang et al., "Exploring Cross-Image Pixel Contrast for Semantic
Segmentation" (ICCV 2021; the paper's reference [36] and its Table 2 row), on this library's InfoNCE core.

Anchors are drawn by :func:`~contrastseg.losses.hard_sampling.sample_hard_anchor_indices` (half wrongly, half
correctly predicted pixels per image and class) from one embedding map: the model's stages resized to the finest
and concatenated (the HRNetV2 representation [36] uses on HRNet), or one stage, through the term's own projector.
Each anchor is contrasted (Eq. 1-2 of the paper this library implements: one positive against all negatives, the
same form as [36]'s loss) against

- the memory (``memory=True``, [36]'s full method): a pixel memory of ``pixels_per_update`` random pixels per image
  and class per step, and with ``region_memory`` a region memory of each image's class means (pixel-to-region
  contrast), ``memory_size`` entries per class each, detached, filled after every backward pass from all processes;
- or the other anchors of the batch (``memory=False``).

The loss is scaled by ``temperature / base_temperature`` as [36]'s code does. ``negatives="semi_hard"`` is [36]'s
semi-hard example sampling, which its released code lacks: each anchor is contrasted only with ``semi_hard_positives``
random positives among its ``semi_hard_fraction`` farthest and ``semi_hard_negatives`` random negatives among its
``semi_hard_fraction`` nearest memory entries (:mod:`contrastseg.losses.semi_hard`).

Differences from the reference implementation (tfzhou/ContrastiveSeg), each a defect its users reported: class 0
is stored and contrasted like any other class; the ring buffers never overwrite their newest entries; every process
holds the same memory (rows are all-gathered) and the term is graph-connected on any batch, so DDP needs no
``loss * 0``; an anchor without positives adds 0 instead of NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from contrastseg.errors import ConfigError
from contrastseg.losses.base import LossContext, TermOutput
from contrastseg.losses.checks import check_temperature
from contrastseg.losses.gather import gather_pixels
from contrastseg.losses.hard_sampling import sample_hard_anchor_indices
from contrastseg.losses.infonce import l2_normalize, supervised_infonce
from contrastseg.losses.map_term import MapContrastTerm
from contrastseg.losses.memory import ClassMemory
from contrastseg.losses.multiscale import downsample_labels
from contrastseg.losses.pairs import region_embeddings, sample_pixels_per_pair
from contrastseg.losses.semi_hard import select_semi_hard, selected_infonce
from contrastseg.models.segmentation import SegOutput

__all__ = ["PixelContrast"]

NEGATIVES = ("all", "semi_hard")


class PixelContrast(MapContrastTerm):
    """Pixel-to-pixel and pixel-to-region contrast with class-wise memories ([36]).

    Args:
        stages: feature stages to embed, resized to the first listed and concatenated (``None``: all, the HRNetV2
            representation [36] uses on HRNet; ``[3]`` for a ResNet's last stage).
        embedding_dim: projector output (256).
        projector_depth: Conv1x1-ReLU-BN blocks of the projector (1, as [36]'s ``convmlp`` head).
        temperature: InfoNCE temperature (0.1).
        base_temperature: the loss is multiplied by ``temperature / base_temperature`` (0.07), as in [36]'s code.
        max_samples: anchors per batch at most (1024).
        max_views: anchors per image and class at most; a class needs more pixels than this to be sampled (100).
        memory: contrast against the memories (``True``, the full method) or against the batch's anchors.
        memory_size: entries per class of each memory (5000).
        pixels_per_update: pixels per image and class added to the pixel memory each step (10).
        region_memory: keep the region memory and contrast against it too (pixel-to-region contrast).
        negatives: ``"all"`` memory entries, or ``"semi_hard"`` sampling (needs ``memory``).
        semi_hard_fraction: share of the nearest negatives / farthest positives ``"semi_hard"`` draws from (0.1).
        semi_hard_positives: positives per anchor drawn by ``"semi_hard"`` (1024).
        semi_hard_negatives: negatives per anchor drawn by ``"semi_hard"`` (2048).
        start_step: the term is 0 for this many training batches, while the memories fill (5000 in [36]'s code).
        backend: InfoNCE implementation (see :func:`~contrastseg.losses.supervised_infonce`).
        weight: multiplier in the objective (0.1 in [36]).
        name: log name.
    """

    def __init__(
        self,
        *,
        stages: Sequence[int] | None = None,
        embedding_dim: int = 256,
        projector_depth: int = 1,
        temperature: float = 0.1,
        base_temperature: float = 0.07,
        max_samples: int = 1024,
        max_views: int = 100,
        memory: bool = True,
        memory_size: int = 5000,
        pixels_per_update: int = 10,
        region_memory: bool = True,
        negatives: str = "all",
        semi_hard_fraction: float = 0.1,
        semi_hard_positives: int = 1024,
        semi_hard_negatives: int = 2048,
        start_step: int = 0,
        backend: str = "auto",
        weight: float = 0.1,
        name: str = "pixel_contrast",
    ) -> None:
        super().__init__(stages=stages, embedding_dim=embedding_dim, projector_depth=projector_depth,
                         temperature=temperature, backend=backend, weight=weight, name=name,
                         counts=dict(max_samples=max_samples, max_views=max_views, memory_size=memory_size,
                                     pixels_per_update=pixels_per_update, semi_hard_positives=semi_hard_positives,
                                     semi_hard_negatives=semi_hard_negatives))
        try:
            check_temperature(base_temperature)
        except ValueError as err:
            raise ConfigError(f"{name}: base_{err}") from err
        if negatives not in NEGATIVES:
            raise ConfigError(f"{name}.negatives must be one of {', '.join(NEGATIVES)}, got {negatives!r}")
        if not 0 < semi_hard_fraction <= 1:
            raise ConfigError(f"{name}.semi_hard_fraction must be in (0, 1], got {semi_hard_fraction}")
        if negatives == "semi_hard" and not memory:
            raise ConfigError(f"{name}: negatives='semi_hard' selects memory negatives; it needs memory=true")
        self.base_temperature = float(base_temperature)
        self.max_samples, self.max_views = max_samples, max_views
        self.use_memory, self.memory_size, self.pixels_per_update = memory, memory_size, pixels_per_update
        self.use_region_memory, self.negatives, self.semi_hard_fraction = region_memory, negatives, semi_hard_fraction
        self.semi_hard_positives, self.semi_hard_negatives = semi_hard_positives, semi_hard_negatives
        self.start_step = int(start_step)
        self.register_buffer("steps_seen", torch.zeros((), dtype=torch.long))
        self.pixel_memory: ClassMemory | None = None
        self.region_memory: ClassMemory | None = None
        self._pending: list[tuple[ClassMemory, Tensor, Tensor]] | None = None

    def bind(self, context: LossContext) -> None:
        super().bind(context)
        if self.use_memory:
            make = dict(num_classes=context.num_classes, size=self.memory_size, dim=self.embedding_dim)
            self.pixel_memory = ClassMemory(**make)
            self.region_memory = ClassMemory(**make) if self.use_region_memory else None

    def forward(self, output: SegOutput, target: Tensor) -> TermOutput:
        """[36]'s loss on ``output.features`` and the predictions ``output.logits`` against labels ``(B, H, W)``."""
        self._pending = None  # only a training forward leaves rows for after_backward
        emb = self.embed(output.features)
        size = emb.shape[-2:]
        labels = downsample_labels(target, size)  # (B, h, w)
        with torch.no_grad():
            predictions = downsample_labels(output.logits.argmax(dim=1), size)  # (B, H', W') -> (B, h, w)
        index, anchor_labels = sample_hard_anchor_indices(
            labels, predictions, ignore_index=self.ignore_index, max_samples=self.max_samples,
            max_views=self.max_views)
        anchors = l2_normalize(gather_pixels(emb, index, distinct=True))  # (N, d)
        if self.use_memory:
            contrast, contrast_labels = self._memory_contents()
            if self.negatives == "semi_hard":
                chosen = select_semi_hard(anchors.detach(), anchor_labels, contrast, contrast_labels,
                                          fraction=self.semi_hard_fraction, num_positives=self.semi_hard_positives,
                                          num_negatives=self.semi_hard_negatives)
                loss = selected_infonce(anchors, contrast, *chosen, temperature=self.temperature)
            else:
                loss = supervised_infonce(anchors, anchor_labels, contrast, contrast_labels, normalized=True,
                                          temperature=self.temperature, backend=self.backend)
            loss = loss + emb.reshape(-1)[:0].float().sum()  # graph-connected when there are no anchors
            if self.training:
                self._pending = self._memory_rows(emb.detach(), labels)
        else:
            loss = supervised_infonce(anchors, anchor_labels, normalized=True, temperature=self.temperature,
                                      backend=self.backend)
        logs = {f"{self.name}_anchors": torch.tensor(float(index.numel()), device=emb.device)}
        loss = loss * (self.temperature / self.base_temperature)
        if self.start_step:
            loss = loss * (self.steps_seen >= self.start_step)  # a tensor: no host sync
        if self.training:
            self.steps_seen += 1
        return TermOutput(loss=loss, logs=logs)

    def _memory_contents(self) -> tuple[Tensor, Tensor]:
        """The pixel memory's entries, then the region memory's: ``(M, d)`` unit rows and ``(M,)`` classes."""
        rows, labels = self.pixel_memory.contents()
        if self.region_memory is not None:
            region_rows, region_labels = self.region_memory.contents()
            rows, labels = torch.cat([rows, region_rows]), torch.cat([labels, region_labels])  # (M, d), (M,)
        return rows, labels

    @torch.no_grad()
    def _memory_rows(self, emb: Tensor, labels: Tensor) -> list[tuple[ClassMemory, Tensor, Tensor]]:
        """This step's rows for each memory, as ``(memory, rows, classes)``: ``pixels_per_update`` random pixels per
        image and class, and the class mean of each image's normalised embeddings, normalised again (as [36]).
        Computed in the forward pass so that the embedding map is not kept until the backward pass ends."""
        index, pixel_labels = sample_pixels_per_pair(labels, self.pixels_per_update, ignore_index=self.ignore_index)
        out = [(self.pixel_memory, l2_normalize(gather_pixels(emb, index)), pixel_labels)]
        if self.region_memory is not None:
            b, d, h, w = emb.shape
            unit = l2_normalize(emb.permute(0, 2, 3, 1).reshape(-1, d))  # (B, d, h, w) -> (B*h*w, d)
            unit = unit.reshape(b, h, w, d).permute(0, 3, 1, 2)  # -> (B, d, h, w)
            means, region_labels, _ = region_embeddings(unit, labels, ignore_index=self.ignore_index)
            out.append((self.region_memory, l2_normalize(means), region_labels))
        return out

    def after_backward(self) -> None:
        """Add this step's pixels and regions to the memories (all processes' rows; every process calls it)."""
        pending, self._pending = self._pending, None
        for memory, rows, labels in pending or []:
            memory.push(rows, labels)
