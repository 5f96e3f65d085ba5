"""The private names of other libraries that contrastseg._compat relies on still exist (fails on an upgrade that
moves them, naming which)."""

from __future__ import annotations

from lightning.pytorch.loggers import WandbLogger

from contrastseg._compat import drop_wandb_anonymous


def test_wandb_logger_keeps_its_init_arguments_in_wandb_init(tmp_path) -> None:
    logger = WandbLogger(save_dir=str(tmp_path), offline=True)
    assert isinstance(logger._wandb_init, dict), "WandbLogger._wandb_init moved"
    assert "anonymous" in logger._wandb_init, "WandbLogger no longer passes anonymous: drop_wandb_anonymous can go"
    drop_wandb_anonymous(logger)
    assert "anonymous" not in logger._wandb_init


def test_ddp_reads_the_buffers_to_ignore_from_the_module() -> None:
    import inspect

    import torch
    from torch.nn.parallel import DistributedDataParallel

    from contrastseg._compat import ddp_ignore_buffers

    module = torch.nn.BatchNorm1d(2)
    ddp_ignore_buffers(module, ["running_mean"])
    ddp_ignore_buffers(module, ["running_var", "running_mean"])
    assert module._ddp_params_and_buffers_to_ignore == ["running_mean", "running_var"]
    assert "_ddp_params_and_buffers_to_ignore" in inspect.getsource(DistributedDataParallel.__init__), \
        "DistributedDataParallel no longer reads module._ddp_params_and_buffers_to_ignore"
