"""Region-aware contrast with a class-wise memory of region centres, Hu et al., "Region-aware Contrastive
Learning for Semantic Segmentation" (ICCV 2021; the paper's reference [15]), on this library's InfoNCE core.

A *region* is one class in one image; its centre is the mean of the embeddings of the region's pixels,
L2-normalised. The labels that define the regions are the ground truth (``region_labels="gt"``, the paper's
intent as we read it) or the prediction (``"prediction"``: the argmax of the logits at the embedding's size,
every pixel, as the released code builds them). Each centre ``r_i`` of class ``c_i`` is contrasted against a
memory ``M`` that holds, per class, the centres of the last ``memory_size`` training images that had the class
(2975, the number of Cityscapes training images, "all training data" in the paper): its positives ``P(i)`` are
the memory entries of ``c_i``, its negatives ``N(i)`` those of the other classes. With
``s_ij = r_i . m_j / t``,

    L_mem = 1/R sum_i 1/|P(i)| sum_{j in P(i)} -log( e^{s_ij} / (e^{s_ij} + sum_{n in N(i)} e^{s_in}) )

over the batch's ``R`` region centres (:func:`~contrastseg.losses.supervised_infonce` with the memory as the
contrast set; a centre without positives or without negatives in the memory adds 0 and still counts in ``R``).
The memory is detached; the gradient reaches the centres only. ``include_batch`` adds ``L_batch``, the same
formula with the other centres of the (per-process) batch as the contrast set instead of the memory (a centre
is never its own positive, and the gradient reaches both sides): ``L = L_mem + L_batch``.

``include_batch`` is off by default: the paper's loss (as we read it) contrasts a centre with the memory only,
and so does the released code (its queues are detached copies, written after the loss). The one thing the
batch term would buy, a signal on the first step, when the memory is empty and ``L_mem`` an exact 0, is one
step of tens of thousands (the released code's random memory gives that step noise rather than a signal); from
the second step on the memory holds the first batch's centres of every process.

The centres of every training step go into the memory after its backward pass
(:meth:`RegionContrast.after_backward`, from all processes), so a step never contrasts a centre with itself.
The method's other terms are the segmentation loss and the deep-supervision cross-entropy on an auxiliary head
(weight 0.4). This term adds neither: with a model that returns ``aux_logits``, put
``CrossEntropy(aux_weight=0.4)`` next to it, or ``OhemCrossEntropy(aux_weight=0.4)`` for the released code's
OHEM criterion (thresh 0.7, min_kept 100000; here the auxiliary head gets plain cross-entropy, the released
code's got OHEM too). The total is ``L_seg + 0.4 L_aux + 0.1 L_RC`` (``weight=0.1``).

Features: the released code contrasts its decoder's 256-channel head output (the classifier's input, without a
projector). Models here expose encoder features, not decoder features, so, like
:class:`~contrastseg.losses.PixelContrast`, this term contrasts its own projector's output on encoder stages
(resized to the first listed and concatenated).

Differences from the released code (hzhupku/RegionContrast), besides the features:

- dot products ``r . m`` instead of the element-wise products ``r * m`` (with the negative queues summed into
  one) of its issue #5, which make the "logits" ``(256, 2 * queue_len)`` and are no InfoNCE;
- the mean over region centres instead of a sum over the classes present;
- region centres per image, not per GPU batch (the same in its 1-image-per-GPU configuration);
- memory slots tracked as filled or empty instead of starting from random unit vectors;
- the memory is filled after the backward pass of training steps only (the released code also enqueued the
  centres of validation images);
- all processes hold the same memory: the centres of every process are all-gathered before they are stored
  (the released code enqueued each process's own centres, and DDP's default buffer broadcast then replaced
  every process's queues with rank 0's at the next forward).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from contrastseg.errors import ConfigError
from contrastseg.losses.base import LossContext, TermOutput
from contrastseg.losses.infonce import l2_normalize, supervised_infonce
from contrastseg.losses.map_term import MapContrastTerm
from contrastseg.losses.memory import ClassMemory
from contrastseg.losses.multiscale import downsample_labels
from contrastseg.losses.pairs import region_embeddings
from contrastseg.models.segmentation import SegOutput

__all__ = ["RegionContrast"]

REGION_LABELS = ("gt", "prediction")


class RegionContrast(MapContrastTerm):
    """Region-centre contrast against a class-wise memory of region centres ([15]).

    For the batch's ``R`` region centres ``r_i`` (per image and class, L2-normalised) of classes ``c_i``
    and ``s = r . m / t``::

        L_mem = 1/R sum_i 1/|P(i)| sum_{j in P(i)} -log( e^{s_ij} / (e^{s_ij} + sum_{n in N(i)} e^{s_in}) )

    with ``P(i)`` the memory entries of class ``c_i`` and ``N(i)`` those of the other classes (0 for a
    centre without either). With ``include_batch``, ``L = L_mem + L_batch``, where ``L_batch`` is the same
    expression with ``P(i)`` the other centres of class ``c_i`` in the batch (never ``r_i`` itself) and
    ``N(i)`` the batch's centres of other classes. Logs ``{name}_regions``, the number ``R`` of region
    centres.

    Args:
        stages: feature stages to embed, resized to the first listed and concatenated (``None``: all).
        embedding_dim: projector output (256, the released code's feature width).
        projector_depth: Conv1x1-ReLU-BN blocks of the projector (1).
        temperature: InfoNCE temperature (0.2, the released code's).
        memory_size: memory entries per class (2975, the number of Cityscapes training images, as the released
            code).
        region_labels: which mask defines the regions: ``"gt"`` (the labels, the paper's intent) or
            ``"prediction"`` (the argmax of ``output.logits``, resized nearest to the embedding's size, at
            every pixel, as the released code).
        include_batch: add ``L_batch``, the contrast of every centre with the batch's other centres (off: the
            paper's memory-only loss; see the module docstring).
        backend: InfoNCE implementation (see :func:`~contrastseg.losses.supervised_infonce`).
        weight: multiplier in the objective (0.1 in [15]).
        name: log name.
    """

    def __init__(
        self,
        *,
        stages: Sequence[int] | None = None,
        embedding_dim: int = 256,
        projector_depth: int = 1,
        temperature: float = 0.2,
        memory_size: int = 2975,
        region_labels: str = "gt",
        include_batch: bool = False,
        backend: str = "auto",
        weight: float = 0.1,
        name: str = "region_contrast",
    ) -> None:
        super().__init__(stages=stages, embedding_dim=embedding_dim, projector_depth=projector_depth,
                         temperature=temperature, backend=backend, weight=weight, name=name,
                         counts=dict(memory_size=memory_size))
        if region_labels not in REGION_LABELS:
            raise ConfigError(f"{name}.region_labels must be one of {', '.join(REGION_LABELS)}, "
                              f"got {region_labels!r}")
        if not isinstance(include_batch, bool):
            raise ConfigError(f"{name}.include_batch must be true or false, got {include_batch!r}")
        self.memory_size, self.region_labels, self.include_batch = memory_size, region_labels, include_batch
        self.memory: ClassMemory | None = None
        self._pending: tuple[Tensor, Tensor] | None = None

    def bind(self, context: LossContext) -> None:
        super().bind(context)
        self.memory = ClassMemory(num_classes=context.num_classes, size=self.memory_size, dim=self.embedding_dim)

    def region_centres(self, output: SegOutput, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The embeddings ``(B, d, h, w)``, the unit region centres ``(R, d)`` (float32) and their classes
        ``(R,)``."""
        emb = self.embed(output.features)
        size = emb.shape[-2:]
        if self.region_labels == "gt":
            labels = downsample_labels(target, size)  # (B, H, W) -> (B, h, w)
        else:
            with torch.no_grad():
                labels = downsample_labels(output.logits.argmax(dim=1), size)  # (B, H', W') -> (B, h, w)
        means, classes, _ = region_embeddings(emb, labels, ignore_index=self.ignore_index)  # (R, d), (R,)
        return emb, l2_normalize(means), classes

    def forward(self, output: SegOutput, target: Tensor) -> TermOutput:
        """``L_mem`` (plus ``L_batch``) on ``output.features`` against labels ``(B, H, W)``."""
        emb, centres, classes = self.region_centres(output, target)
        rows, row_classes = self.memory.contents()  # (M, d) detached, (M,)
        loss = supervised_infonce(centres, classes, rows, row_classes, normalized=True,
                                  temperature=self.temperature, backend=self.backend)
        if self.include_batch:
            loss = loss + supervised_infonce(centres, classes, normalized=True, temperature=self.temperature,
                                             backend=self.backend)
        loss = loss + emb.reshape(-1)[:0].float().sum()  # graph-connected on any batch
        # Stored after the backward pass (after_backward); an evaluation forward leaves nothing behind.
        self._pending = (centres.detach(), classes) if self.training else None
        logs = {f"{self.name}_regions": torch.tensor(float(centres.shape[0]), device=emb.device)}
        return TermOutput(loss=loss, logs=logs)

    def after_backward(self) -> None:
        """Add this training step's region centres to the memory (every process's centres; every process
        calls it)."""
        if self._pending is None:
            return
        centres, classes = self._pending
        self._pending = None
        self.memory.push(centres, classes)
