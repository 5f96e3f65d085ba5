"""The contrastive loss term users put in a config: per-scale projectors + Eq. 3-5's weighted terms."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from contrastseg.errors import ConfigError
from contrastseg.losses.base import LossContext, LossTerm, TermOutput
from contrastseg.losses.multiscale import MultiScaleContrastiveLoss, PresampledAnchors
from contrastseg.models.segmentation import SegOutput

__all__ = ["MultiScaleContrast", "Projector"]

PAPER_SCALE_WEIGHTS = {4: 1.0, 8: 0.7, 16: 0.4, 32: 0.1}


class Projector(nn.Sequential):
    """``f_proj``: ``depth`` blocks of Conv1x1-ReLU-BN at the input width, then a linear Conv1x1 to ``dim``.

    Args:
        in_channels: channels of the encoder stage.
        dim: embedding dimension ``d`` (256).
        depth: number of Conv1x1-ReLU-BN blocks (2 as the paper states; the authors' configs shipped 1).
    """

    def __init__(self, in_channels: int, dim: int = 256, *, depth: int = 2) -> None:
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Conv2d(in_channels, in_channels, 1), nn.ReLU(inplace=True), nn.BatchNorm2d(in_channels)]
        super().__init__(*layers, nn.Conv2d(in_channels, dim, 1))


class MultiScaleContrast(LossTerm):
    """``lambda_ms * L_cms + lambda_cs * L_ccs`` (Eq. 5 without ``L_ce``) on the model's multi-scale features.

    The loss term to put in a config or in :class:`~contrastseg.ContrastSegModule`'s ``losses``: it projects
    the features and calls the functional core :class:`~contrastseg.losses.MultiScaleContrastiveLoss` (use
    that one directly in your own training loop, on embeddings you project yourself).

    Owns one :class:`Projector` per used stage (built in :meth:`~contrastseg.losses.LossTerm.bind` from the
    model's channels, so it is trained, checkpointed and optimised with the model, and absent from an exported
    model). Logs ``ms_s<stride>`` and ``cs_<a>_<b>`` (strides) for every sub-term, and ``ms`` / ``cs`` for the
    weighted sums.

    Args:
        stages: indices into ``SegOutput.features`` to contrast (``None``: all).
        scale_weights: ``w_s`` per used stage; ``None``: the paper's 1, 0.7, 0.4, 0.1 for strides 4, 8, 16, 32
            (1.0 for other strides).
        cross_scale_pairs: pairs of positions in ``stages`` (rows, columns); ``None``: (0, 3) and (0, 2) with
            four stages, (0, last) with two or three, none with one. ``[]`` turns the cross-scale term off.
        cross_scale_weights: ``w_p`` per pair (``None``: 1 each).
        lambda_ms: weight of the multi-scale term (0.1).
        lambda_cs: weight of the cross-scale term (0.1).
        temperature: per-scale temperature (0.1).
        cross_scale_temperature: cross-scale temperature (``None``: ``temperature``).
        embedding_dim: projector output ``d`` (256).
        projector_depth: Conv1x1-ReLU-BN blocks per projector (2).
        min_views_per_class: see :func:`~contrastseg.losses.sample_balanced_anchors` (5).
        max_views_per_class: (2500).
        max_anchors: (10000).
        sampling: ``"balanced"`` (the paper's sampler) or ``"all"`` labelled pixels (Table 7a; see
            :class:`~contrastseg.losses.MultiScaleContrastiveLoss`).
        all_max_anchors: hard cap per scale for ``sampling="all"`` (40000): above it the step fails with the
            anchor count and the memory it would need.
        warmup_steps: linear warm-up of both lambdas from 0 over this many training batches (0: none).
        gather_distributed: sample anchors from the global batch under DDP (off: per GPU, as the paper).
        backend: InfoNCE implementation, ``"auto"`` (fused Triton kernels on CUDA for the smaller terms),
            ``"triton"`` or ``"torch"``.
        weight: multiplier of the whole term in the objective (keep 1; the lambdas are the paper's weights).
        name: log prefix.
    """

    train_only = True

    def __init__(
        self,
        *,
        stages: Sequence[int] | None = None,
        scale_weights: Sequence[float] | None = None,
        cross_scale_pairs: Sequence[Sequence[int]] | None = None,
        cross_scale_weights: Sequence[float] | None = None,
        lambda_ms: float = 0.1,
        lambda_cs: float = 0.1,
        temperature: float = 0.1,
        cross_scale_temperature: float | None = None,
        embedding_dim: int = 256,
        projector_depth: int = 2,
        min_views_per_class: int = 5,
        max_views_per_class: int = 2500,
        max_anchors: int = 10000,
        sampling: str = "balanced",
        all_max_anchors: int = 40000,
        warmup_steps: int = 0,
        gather_distributed: bool = False,
        backend: str = "auto",
        weight: float = 1.0,
        name: str = "contrast",
    ) -> None:
        super().__init__(name=name, weight=weight)
        self.options = dict(stages=stages, scale_weights=scale_weights, cross_scale_pairs=cross_scale_pairs,
                            cross_scale_weights=cross_scale_weights)
        self.lambda_ms, self.lambda_cs = float(lambda_ms), float(lambda_cs)
        self.temperature, self.cross_scale_temperature = temperature, cross_scale_temperature
        self.embedding_dim, self.projector_depth = embedding_dim, projector_depth
        self.sampling = dict(min_views_per_class=min_views_per_class, max_views_per_class=max_views_per_class,
                             max_anchors=max_anchors, sampling=sampling, all_max_anchors=all_max_anchors)
        self.warmup_steps, self.gather_distributed = int(warmup_steps), gather_distributed
        self.backend = backend
        self.register_buffer("steps_seen", torch.zeros((), dtype=torch.long))
        self.projectors = nn.ModuleList()
        self.loss: MultiScaleContrastiveLoss | None = None
        self._presampled: PresampledAnchors | None = None
        # Set by ContrastHealthMonitor for a step whose gradients it measures: the next forward keeps each sub-term
        # as it enters the objective (weight, lambda, w_s or w_p and the warm-up applied), graph attached.
        self.record_pieces = False
        self.pieces: dict[str, Tensor] = {}

    def bind(self, context: LossContext) -> None:
        super().bind(context)
        n_features = len(context.feature_channels)
        if n_features == 0:
            raise ConfigError(f"{type(self).__name__} needs a model that exposes feature_channels/feature_strides")
        stages = list(range(n_features)) if self.options["stages"] is None else list(self.options["stages"])
        if not stages or any(not 0 <= s < n_features for s in stages):
            raise ConfigError(f"{self.name}.stages={stages}: the model has feature stages 0..{n_features - 1}")
        strides = [context.feature_strides[s] for s in stages]
        weights = self.options["scale_weights"]
        weights = [PAPER_SCALE_WEIGHTS.get(s, 1.0) for s in strides] if weights is None else list(weights)
        if len(weights) != len(stages):
            raise ConfigError(f"{self.name}.scale_weights has {len(weights)} entries for {len(stages)} stages")
        pairs = self.options["cross_scale_pairs"]
        if pairs is None:
            pairs = [(0, 3), (0, 2)] if len(stages) == 4 else ([(0, len(stages) - 1)] if len(stages) > 1 else [])
        pair_weights = self.options["cross_scale_weights"]
        pair_weights = [1.0] * len(pairs) if pair_weights is None else list(pair_weights)
        try:
            self.loss = MultiScaleContrastiveLoss(
                scale_weights=weights, cross_scale_pairs=pairs, cross_scale_weights=pair_weights,
                temperature=self.temperature, cross_scale_temperature=self.cross_scale_temperature,
                ignore_index=context.ignore_index, gather_distributed=self.gather_distributed, backend=self.backend,
                **self.sampling)
        except ValueError as err:
            raise ConfigError(f"{self.name}: {err}") from err
        self.stages, self.strides = stages, strides
        self.projectors = nn.ModuleList(
            Projector(context.feature_channels[s], self.embedding_dim, depth=self.projector_depth) for s in stages)
        tags = [f"s{st}" if strides.count(st) == 1 else f"s{st}_stage{s}" for s, st in zip(stages, strides)]
        self.scale_tags = tags
        self.pair_tags = [f"{tags[a][1:]}_{tags[b][1:]}" for a, b in self.loss.cross_scale_pairs]

    def embed(self, features: Sequence[Tensor]) -> list[Tensor]:
        """Projected (not normalised) embeddings ``(B, d, h_s, w_s)`` of the used stages."""
        return [proj(features[s]) for proj, s in zip(self.projectors, self.stages)]

    def prepare(self, target: Tensor) -> None:
        """Queue the draw of this batch's anchors from the labels ``(B, H, W)`` before the forward pass; the
        forward reads its size (the sampler's one host sync) after the model's forward pass was queued."""
        if self.loss is not None and self.training:
            self._presampled = self.loss.presample(target, strides=self.strides)

    def forward(self, output: SegOutput, target: Tensor) -> TermOutput:
        """Both contrastive terms on ``output.features`` against labels ``(B, H, W)``."""
        if self.loss is None:
            raise RuntimeError(f"{type(self).__name__}.bind() must run before forward (ContrastSegModule does it)")
        presampled, self._presampled = self._presampled, None  # used once, and only for the same labels
        out = self.loss(self.embed(output.features), target, strides=self.strides, presampled=presampled)
        ms = sum(w * l for w, l in zip(self.loss.scale_weights, out.per_scale))
        cs = sum((w * l for w, l in zip(self.loss.cross_scale_weights, out.cross_scale)), torch.zeros_like(ms))
        factor = self._warmup_factor()
        logs = {f"ms_{t}": l.detach() for t, l in zip(self.scale_tags, out.per_scale)}
        logs |= {f"cs_{t}": l.detach() for t, l in zip(self.pair_tags, out.cross_scale)}
        logs |= {"ms": ms.detach(), "cs": cs.detach()}
        if self.warmup_steps:
            logs["contrast_warmup"] = factor.detach()
        if self.record_pieces:
            scale = self.weight * factor
            self.pieces = {f"ms_{t}": scale * self.lambda_ms * w * l
                           for t, w, l in zip(self.scale_tags, self.loss.scale_weights, out.per_scale) if w != 0}
            self.pieces |= {f"cs_{t}": scale * self.lambda_cs * w * l
                            for t, w, l in zip(self.pair_tags, self.loss.cross_scale_weights, out.cross_scale)}
        return TermOutput(loss=factor * (self.lambda_ms * ms + self.lambda_cs * cs), logs=logs)

    def _warmup_factor(self) -> Tensor:
        if self.training:
            self.steps_seen += 1
        if not self.warmup_steps:
            return torch.ones((), device=self.steps_seen.device)
        return (self.steps_seen.float() / self.warmup_steps).clamp(max=1.0)  # a tensor: no host sync
