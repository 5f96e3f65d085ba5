"""The loss-term contract: every term is an ``nn.Module`` the LightningModule owns, weights and sums.

Terms are injected through :class:`~contrastseg.ContrastSegModule`'s constructor (chosen in YAML with
``class_path``), so their parameters (e.g. contrastive projectors) are trained, checkpointed and optimised with
the model. Before training the module calls :meth:`LossTerm.bind` once with the facts a term may need.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from contrastseg.models.segmentation import SegOutput

__all__ = ["LossContext", "LossTerm", "TermOutput"]


@dataclass(frozen=True)
class LossContext:
    """Facts about the data and the model that a loss term may need to build itself.

    Attributes:
        num_classes: number of classes of the data module.
        ignore_index: the label value that never contributes to a loss (255).
        feature_channels: channels of each map in ``SegOutput.features``.
        feature_strides: stride of each map in ``SegOutput.features``.
    """

    num_classes: int
    ignore_index: int = 255
    feature_channels: tuple[int, ...] = ()
    feature_strides: tuple[int, ...] = ()


@dataclass
class TermOutput:
    """A term's value and optional named sub-terms.

    Attributes:
        loss: the scalar the module multiplies by ``term.weight`` and adds to the objective.
        logs: extra scalars logged as ``train/loss_<key>`` (e.g. one per scale); not added again.
    """

    loss: Tensor
    logs: dict[str, Tensor] = field(default_factory=dict)


class LossTerm(nn.Module):
    """Base class of loss terms.

    Args:
        name: logged as ``train/loss_<name>``; unique within a module.
        weight: multiplier of this term in the total objective.
    """

    train_only: bool = False
    """Skip this term in validation/test (e.g. contrastive terms, whose value on eval data is not informative)."""

    def __init__(self, *, name: str, weight: float = 1.0) -> None:
        super().__init__()
        self.name = name
        self.weight = float(weight)
        self.ignore_index = 255

    def bind(self, context: LossContext) -> None:
        """Receive the data/model facts once, before training; override to build parameters or check options."""
        self.ignore_index = context.ignore_index

    def setup_data(self, datamodule: Any) -> None:
        """Receive the data module before fitting/validation (override to compute statistics such as class weights).

        Args:
            datamodule: the trainer's data module, or ``None`` when the module is used without one.
        """

    def prepare(self, target: Tensor) -> None:
        """Work that needs only the labels ``(B, H, W)``, run before the model's forward pass in training.

        The module calls it with the batch's labels and then calls :meth:`forward` with the same tensor. Override
        for label-only work that the host must wait for (such as sizing the anchor set): queued here, it is done by
        the time :meth:`forward` needs it, without the host waiting for the model's forward pass.
        """

    def after_backward(self) -> None:
        """Work after the training step's backward pass, such as adding this step's embeddings to a memory.

        Called on every process after each backward pass that the module ran; not after a batch the non-finite
        policy skipped (which runs no backward), and before any callback sees the end of the batch (so a checkpoint
        saved at that step already holds the update).
        """

    def main_and_aux(
        self, loss_fn: Callable[[Tensor, Tensor], Tensor], output: SegOutput, target: Tensor, aux_weight: float,
        aux_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    ) -> Tensor | TermOutput:
        """``loss_fn`` on the logits, plus ``aux_weight`` times it on auxiliary logits when the model has them.

        Args:
            loss_fn: ``(logits, target) -> scalar``.
            output: the model's output (``logits``, optional ``aux_logits``).
            target: ``(B, H, W)`` labels.
            aux_weight: weight of the auxiliary loss (0.4 for OCRNet/UPerNet).
            aux_fn: the auxiliary logits' loss, when it differs from ``loss_fn`` (OHEM: plain CE on the aux head).

        Returns:
            The scalar without auxiliary logits; otherwise a :class:`TermOutput` whose logs hold both parts.
        """
        loss = loss_fn(output.logits, target)
        if output.aux_logits is None or aux_weight == 0:
            return loss
        aux = (aux_fn or loss_fn)(output.aux_logits, target)
        return TermOutput(loss=loss + aux_weight * aux, logs={f"{self.name}_main": loss, f"{self.name}_aux": aux})

    def forward(self, output: SegOutput, target: Tensor) -> Tensor | TermOutput:  # pragma: no cover - abstract
        """Compute the term from the model output and labels ``(B, H, W)`` (long, ``ignore_index`` = ignore)."""
        raise NotImplementedError
