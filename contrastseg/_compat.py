"""Uses of other libraries' private names, in one place, each with the versions it was checked against.

When an upgrade moves one of these, the test of this module (``tests/test_compat.py``) fails and names it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ddp_ignore_buffers", "drop_wandb_anonymous", "logged_step", "logs_this_step"]


def drop_wandb_anonymous(logger: Any) -> None:
    """Remove the ``anonymous`` key Lightning's ``WandbLogger`` always passes to ``wandb.init``.

    wandb (0.19 and later) warns "The anonymous setting has no effect and will be removed" whenever the key is
    present, even as ``None``, so every W&B run printed it. Checked with lightning 2.6.6 (``WandbLogger._wandb_init``)
    and wandb 0.31.0. Call before the logger's ``experiment`` is first used.

    Args:
        logger: a ``lightning.pytorch.loggers.WandbLogger`` (other loggers are left alone).
    """
    init = getattr(logger, "_wandb_init", None)
    if isinstance(init, dict) and init.get("anonymous") is None:
        init.pop("anonymous", None)


def logs_this_step(trainer: Any) -> bool:
    """Whether the trainer writes the values logged in this training batch (``log_every_n_steps``).

    Lightning's ``_LoggerConnector.should_update_logs``, valid from ``on_train_batch_start`` to
    ``on_train_batch_end``; a value logged with ``on_step=True`` in another batch is dropped. Checked with lightning
    2.5.3 and 2.6.6.
    """
    return bool(trainer._logger_connector.should_update_logs)


def logged_step(trainer: Any) -> int:
    """The step under which Lightning logs the values of the current training batch (in ``on_train_batch_end``).

    Lightning's ``fit_loop.epoch_loop._batches_that_stepped``, which it passes to ``Logger.log_metrics`` for training
    steps. Checked with lightning 2.5.3 and 2.6.6.
    """
    return int(trainer.fit_loop.epoch_loop._batches_that_stepped)


def ddp_ignore_buffers(module: Any, names: list[str]) -> None:
    """Have ``DistributedDataParallel`` leave the buffers ``names`` of ``module`` alone (no broadcast from process 0
    before every forward pass). Call before the module is wrapped.

    For buffers every process keeps identical itself, such as the contrastive memories (all-gathered updates), whose
    broadcast would copy hundreds of MB per step. torch's ``DistributedDataParallel._set_params_and_buffers_to_ignore
    _for_model`` (sets ``module._ddp_params_and_buffers_to_ignore``, read when DDP wraps the module); checked with
    torch 2.2 and 2.14.1. Names already set there are kept.
    """
    from torch.nn.parallel import DistributedDataParallel

    known = list(getattr(module, "_ddp_params_and_buffers_to_ignore", []))
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, known + [n for n in names
                                                                                      if n not in known])
