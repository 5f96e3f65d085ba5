"""The private names of other libraries that contrastseg._compat relies on still exist and behave as it expects
(fails on an upgrade that moves them, naming which)."""

from __future__ import annotations

import csv
import inspect
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import timm.models.swin_transformer
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from torch.nn.parallel import DistributedDataParallel

from contrastseg._compat import (
    aspp_decoder,
    attached_trainer,
    batches_processed,
    checkpoint_saves_on_exception,
    checkpoint_skips_saving,
    ddp_ignore_buffers,
    drop_wandb_anonymous,
    foreach_copy_,
    given_hyperparameters,
    keep_csv_metrics,
    logged_step,
    logs_this_step,
    save_last_checkpoint,
    timm_checkpoint_filter,
)


def test_wandb_logger_keeps_its_init_arguments_in_wandb_init(tmp_path) -> None:
    logger = WandbLogger(save_dir=str(tmp_path), offline=True)
    assert isinstance(logger._wandb_init, dict), "WandbLogger._wandb_init moved"
    assert "anonymous" in logger._wandb_init, "WandbLogger no longer passes anonymous: drop_wandb_anonymous can go"
    drop_wandb_anonymous(logger)
    assert "anonymous" not in logger._wandb_init


def test_ddp_reads_the_buffers_to_ignore_from_the_module() -> None:
    module = torch.nn.BatchNorm1d(2)
    ddp_ignore_buffers(module, ["running_mean"])
    ddp_ignore_buffers(module, ["running_var", "running_mean"])
    assert module._ddp_params_and_buffers_to_ignore == ["running_mean", "running_var"]
    assert "_ddp_params_and_buffers_to_ignore" in inspect.getsource(DistributedDataParallel.__init__), \
        "DistributedDataParallel no longer reads module._ddp_params_and_buffers_to_ignore"


def _fit(tmp_path: Path, callbacks: list[L.Callback], **kwargs: Any) -> L.Trainer:
    """A few steps of Lightning's BoringModel on the CPU, without logger or progress bar."""
    options = dict(max_epochs=1, limit_train_batches=3, limit_val_batches=0, logger=False,
                   enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer = L.Trainer(default_root_dir=tmp_path, callbacks=callbacks, **options | kwargs)
    trainer.fit(BoringModel())
    return trainer


def test_the_cli_sets_the_given_hyperparameters_while_it_builds_the_model(monkeypatch) -> None:
    monkeypatch.setattr("sys.argv", ["contrastseg"])  # only args= reaches the parser
    seen = []

    class Model(BoringModel):
        def __init__(self, width: int = 3) -> None:
            super().__init__()
            seen.append(given_hyperparameters())

    assert given_hyperparameters() is None
    Model()
    LightningCLI(Model, run=False, args=["--model.width=5", "--trainer.logger=false"], save_config_callback=None)
    assert seen[0] is None
    assert seen[1] is not None and seen[1].get("width") == 5, \
        "LightningCLI no longer sets hparams_mixin._given_hyperparameters around the model's constructor"
    assert given_hyperparameters() is None


def test_attached_trainer_is_none_without_a_trainer() -> None:
    module = BoringModel()
    assert attached_trainer(module) is None
    with pytest.raises(RuntimeError):
        module.trainer  # noqa: B018 - the public property raises: why attached_trainer exists
    trainer = L.Trainer(logger=False)
    module.trainer = trainer
    assert attached_trainer(module) is trainer


def test_the_training_loop_counters(tmp_path) -> None:
    seen = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            seen.append((logs_this_step(trainer), logged_step(trainer), batches_processed(trainer)))

    trainer = _fit(tmp_path, [Record()], max_epochs=2, log_every_n_steps=2)
    assert [s[1] for s in seen] == [0, 1, 2, 3, 4, 5], "fit_loop.epoch_loop._batches_that_stepped changed"
    assert [s[0] for s in seen] == [(step + 1) % 2 == 0 for step in range(6)], \
        "_logger_connector.should_update_logs changed"
    assert [s[2] for s in seen] == [1, 2, 3, 1, 2, 3], "fit_loop.epoch_loop.batch_progress changed"
    assert batches_processed(trainer) == 3


def test_model_checkpoint_private_methods(tmp_path) -> None:
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=0, save_last=True, save_on_exception=True)
    seen = []

    class Probe(L.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step == 1:
                seen.append((checkpoint_skips_saving(checkpoint, trainer),
                             checkpoint_saves_on_exception(checkpoint, trainer)))
                save_last_checkpoint(checkpoint, trainer)
                seen.append((checkpoint_skips_saving(checkpoint, trainer),
                             checkpoint_saves_on_exception(checkpoint, trainer)))
                seen.append(sorted(p.name for p in (tmp_path / "ckpt").iterdir()))

    _fit(tmp_path, [checkpoint, Probe()], enable_checkpointing=True)
    assert seen == [(False, True), (True, False), ["last.ckpt"]], \
        "ModelCheckpoint's _should_skip_saving_checkpoint / _should_save_on_exception / _save_last_checkpoint changed"


def test_a_reopened_csv_logger_appends_to_its_metrics(tmp_path) -> None:
    first = CSVLogger(tmp_path, name="run", version=0)
    first.log_metrics({"loss": 1.0}, step=0)
    first.save()
    again = CSVLogger(tmp_path, name="run", version=0)
    keep_csv_metrics(again)
    again.log_metrics({"loss": 0.5}, step=1)
    again.save()
    rows = list(csv.DictReader((tmp_path / "run" / "version_0" / "metrics.csv").open()))
    assert [(r["step"], r["loss"]) for r in rows] == [("0", "1.0"), ("1", "0.5")], \
        "CSVLogger's writer (fabric csv_logs._ExperimentWriter, metrics_keys) changed"
    keep_csv_metrics(CSVLogger(tmp_path, name="empty"))  # no metrics.csv: nothing to keep


def test_foreach_copy() -> None:
    dst, src = [torch.zeros(2), torch.zeros(3)], [torch.ones(2), torch.full((3,), 2.0)]
    foreach_copy_(dst, src)
    assert [d.tolist() for d in dst] == [[1.0, 1.0], [2.0, 2.0, 2.0]]


def test_smp_aspp_decoder_keeps_its_interface_and_parameter_names() -> None:
    decoder = aspp_decoder(8, 16, (1, 2, 3), 0.1).eval()
    out = decoder([torch.randn(1, 4, 6, 6), torch.randn(1, 8, 5, 7)])  # the encoder's list; it reads the last
    assert out.shape == (1, 16, 5, 7)
    names = {k.split(".")[0] for k in decoder.state_dict()}
    assert names == {"aspp", "conv", "bn"}, f"smp's DeepLabV3Decoder renamed its parameters ({sorted(names)}): " \
                                            "DeepLabv3 checkpoints would no longer load"
    assert "aspp.convs.0.0.weight" in decoder.state_dict()


def test_timm_checkpoint_filter_is_the_family_filter() -> None:
    assert timm_checkpoint_filter("swin_tiny_patch4_window7_224") is timm.models.swin_transformer.checkpoint_filter_fn
    assert timm_checkpoint_filter("resnet18") is None


def test_parser_options_are_listed_with_a_help_option_per_class_typed_option() -> None:
    from jsonargparse import ArgumentParser
    from torch.optim import Optimizer

    from contrastseg._compat import has_option

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--optimizer", type=Optimizer)
    parser.add_argument("--steps", type=int)
    assert has_option(parser, "--steps") and not has_option(parser, "--steps.help")
    assert has_option(parser, "--optimizer.help"), "jsonargparse no longer adds --KEY.help to a class-typed option"
