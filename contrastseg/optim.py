"""Learning-rate schedules stated the way the paper states them (per iteration)."""

from __future__ import annotations

import warnings
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["PolyLR"]


class PolyLR(LambdaLR):
    """Poly decay ``lr = base_lr * (1 - step / total_steps) ** power`` per iteration, after an optional warm-up.

    ``power=0.9`` is the SGD schedule of the paper's CNNs; ``power=1.0`` with ``warmup_steps=1500`` and
    ``warmup_ratio=1e-6`` is the Swin/AdamW schedule (linear warm-up, then linear decay).

    Args:
        optimizer: the wrapped optimizer.
        total_steps: number of training iterations; ``None`` lets :class:`~contrastseg.ContrastSegModule` fill in
            the trainer's ``estimated_stepping_batches`` (``max_steps`` or epochs x batches; ``max_epochs`` when
            stepped per epoch). On resuming, the length is the resumed run's: continued with a larger
            ``trainer.max_steps``, it decays over the new length (with a warning), not the checkpoint's.
        power: decay power.
        min_lr_ratio: floor as a fraction of the base learning rate.
        warmup_steps: linear warm-up length (0: none).
        warmup_ratio: learning-rate factor at step 0 of the warm-up.
    """

    def __init__(
        self, optimizer: Optimizer, *, total_steps: int | None = None, power: float = 0.9, min_lr_ratio: float = 0.0,
        warmup_steps: int = 0, warmup_ratio: float = 1e-6,
    ) -> None:
        self.total_steps, self.power, self.min_lr_ratio = total_steps, power, min_lr_ratio
        self.warmup_steps, self.warmup_ratio = warmup_steps, warmup_ratio
        super().__init__(optimizer, self._factor)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the position in the schedule; the length stays this run's (see ``total_steps``)."""
        total = self.total_steps
        super().load_state_dict(state_dict)  # LambdaLR restores every attribute, the checkpoint's length too
        if state_dict.get("total_steps") != total:
            warnings.warn(f"PolyLR: the checkpoint's schedule ends at step {state_dict.get('total_steps')}, this "
                          f"run's at {total} (trainer.max_steps, max_epochs or total_steps changed); the learning "
                          f"rate now decays over {total}", UserWarning, stacklevel=2)
        self.total_steps = total

    def _factor(self, step: int) -> float:
        decay = 1.0
        if self.total_steps:
            progress = min(step, self.total_steps) / self.total_steps
            decay = max((1.0 - progress) ** self.power, self.min_lr_ratio)
        if step < self.warmup_steps:
            decay *= self.warmup_ratio + (1.0 - self.warmup_ratio) * step / self.warmup_steps
        return decay
