"""TrainClock: the training time so far, validation excluded, in the metrics.csv row of every validation."""

from __future__ import annotations

import csv
import time
from functools import partial

from lightning import Callback, Trainer
from lightning.pytorch.loggers import CSVLogger

from contrastseg import ContrastSegModule
from contrastseg.callbacks import TrainClock
from contrastseg.data import SyntheticDataModule
from contrastseg.models import Encoder, HRNetV2Head, SegmentationModel


class _Slow(Callback):
    """0.1 s more per training batch, 2 s more per validation; remembers when each validation ended."""

    def __init__(self) -> None:
        self.ended: list[float] = []

    def on_train_batch_end(self, *args) -> None:
        time.sleep(0.1)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            time.sleep(2.0)

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.ended.append(time.perf_counter())


def _fit(tmp_path, clock: TrainClock, slow: _Slow, **trainer_kwargs) -> list[dict]:
    data = SyntheticDataModule(num_train=4, num_val=2, image_size=(32, 32), batch_size=2, num_workers=0)
    net = SegmentationModel(data.num_classes, encoder=Encoder("resnet18"), decoder=partial(HRNetV2Head, channels=16))
    trainer = Trainer(callbacks=[clock, slow], logger=CSVLogger(tmp_path, name="run"), enable_progress_bar=False,
                      enable_checkpointing=False, enable_model_summary=False, accelerator="cpu", **trainer_kwargs)
    trainer.fit(ContrastSegModule(net, num_classes=data.num_classes), datamodule=data)
    return list(csv.DictReader(next(tmp_path.rglob("metrics.csv")).open()))


def test_training_time_is_logged_with_every_validation_and_leaves_validation_out(tmp_path) -> None:
    clock, slow = TrainClock(), _Slow()
    rows = _fit(tmp_path, clock, slow, max_epochs=2, num_sanity_val_steps=1)
    validations = [r for r in rows if r.get("val/mIoU")]
    assert len(validations) == 2  # none for the sanity check
    times = [float(r["time/train_s"]) for r in validations]
    assert all(r.get("time/train_s") == "" for r in rows if not r.get("val/mIoU"))
    # Each epoch trains 2 batches (>= 0.2 s with the sleeps); the 2 s of its validation are not counted.
    trained, between = times[1] - times[0], slow.ended[1] - slow.ended[0]
    assert times[0] >= 0.2 and trained >= 0.2 and between - trained >= 2.0, (times, slow.ended)
    assert abs(clock.elapsed - times[1]) < 1e-3  # stopped at the end: nothing counted after the last validation


def test_the_time_survives_a_checkpoint() -> None:
    clock = TrainClock()
    clock.train_s = 12.5
    restored = TrainClock()
    restored.load_state_dict(clock.state_dict())
    assert restored.elapsed == 12.5
    restored._start()
    time.sleep(0.05)
    assert restored.state_dict()["train_s"] > 12.5  # a checkpoint taken mid-stretch holds the running time
