"""Learning-rate schedules stated the way the paper states them (per iteration)."""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["PolyLR"]


class PolyLR(LambdaLR):
    """Poly decay ``lr = base_lr * (1 - step / total_steps) ** power``, stepped every iteration.

    Args:
        optimizer: the wrapped optimizer.
        total_steps: number of training iterations; ``None`` lets :class:`~contrastseg.ContrastSegModule` fill in
            the trainer's ``estimated_stepping_batches`` (``max_steps`` or epochs x batches).
        power: decay power (0.9 in the paper).
        min_lr_ratio: floor as a fraction of the base learning rate.
    """

    def __init__(
        self, optimizer: Optimizer, *, total_steps: int | None = None, power: float = 0.9, min_lr_ratio: float = 0.0
    ) -> None:
        self.total_steps, self.power, self.min_lr_ratio = total_steps, power, min_lr_ratio
        super().__init__(optimizer, self._factor)

    def _factor(self, step: int) -> float:
        if not self.total_steps:
            return 1.0
        progress = min(step, self.total_steps) / self.total_steps
        return max((1.0 - progress) ** self.power, self.min_lr_ratio)
