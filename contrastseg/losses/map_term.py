"""The part pixel contrast [36] and region contrast [15] share: one embedding map, made of encoder stages resized
to the first listed and concatenated, through the term's own projector."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from contrastseg.errors import ConfigError
from contrastseg.losses.base import LossContext, LossTerm
from contrastseg.losses.checks import check_temperature
from contrastseg.losses.contrastive import Projector
from contrastseg.losses.infonce import check_backend
from contrastseg.ops import resize

__all__ = ["MapContrastTerm", "embedding_map"]


def embedding_map(features: Sequence[Tensor], stages: Sequence[int]) -> Tensor:
    """The stages ``stages`` of ``features`` resized (bilinear) to the first one's size and concatenated:
    ``(B, sum C_s, h, w)``."""
    size = features[stages[0]].shape[-2:]
    maps = [resize(features[s], size) for s in stages]
    return maps[0] if len(maps) == 1 else torch.cat(maps, dim=1)  # (B, C_s, h, w) each -> (B, sum C_s, h, w)


class MapContrastTerm(LossTerm):
    """Base of the contrastive terms on one embedded map: options, checks, and the projector, built in ``bind``.

    Args:
        stages: feature stages, resized to the first listed and concatenated (``None``: all).
        embedding_dim: projector output.
        projector_depth: Conv1x1-ReLU-BN blocks of the projector.
        temperature: InfoNCE temperature.
        backend: InfoNCE implementation (see :func:`~contrastseg.losses.supervised_infonce`).
        weight: multiplier in the objective.
        name: log name.
        counts: further options that must be positive integers, by name (checked with the others).
    """

    train_only = True

    def __init__(self, *, stages: Sequence[int] | None, embedding_dim: int, projector_depth: int,
                 temperature: float, backend: str, weight: float, name: str, counts: dict[str, int]) -> None:
        super().__init__(name=name, weight=weight)
        try:
            check_temperature(temperature)
            check_backend(backend)
        except ValueError as err:
            raise ConfigError(f"{name}: {err}") from err
        for key, value in {"embedding_dim": embedding_dim, **counts}.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name}.{key} must be a positive integer, got {value!r}")
        if not isinstance(projector_depth, int) or isinstance(projector_depth, bool) or projector_depth < 0:
            raise ConfigError(f"{name}.projector_depth must be a non-negative integer, got {projector_depth!r}")
        self.stages_option = None if stages is None else list(stages)
        self.embedding_dim, self.projector_depth = embedding_dim, projector_depth
        self.temperature, self.backend = float(temperature), backend
        self.projector: Projector | None = None

    def bind(self, context: LossContext) -> None:
        super().bind(context)
        n = len(context.feature_channels)
        if n == 0:
            raise ConfigError(f"{type(self).__name__} needs a model that exposes feature_channels/feature_strides")
        stages = list(range(n)) if self.stages_option is None else self.stages_option
        if not stages or any(not 0 <= s < n for s in stages):
            raise ConfigError(f"{self.name}.stages={stages}: the model has feature stages 0..{n - 1}")
        self.stages = stages
        channels = sum(context.feature_channels[s] for s in stages)
        self.projector = Projector(channels, self.embedding_dim, depth=self.projector_depth)

    def embed(self, features: Sequence[Tensor]) -> Tensor:
        """Projected (not normalised) embeddings ``(B, d, h, w)`` at the first used stage's resolution."""
        if self.projector is None:
            raise RuntimeError(f"{type(self).__name__}.bind() must run before forward (ContrastSegModule does it)")
        return self.projector(embedding_map(features, self.stages))
