"""EvalReport: the per-class table of every validation and test, printed through Lightning and written as files."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from lightning import Trainer
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger

import contrastseg.callbacks.eval_report as eval_report
from contrastseg import ContrastSegModule
from contrastseg.callbacks import EvalReport
from contrastseg.data import SyntheticDataModule
from contrastseg.models import Encoder, HRNetV2Head, SegmentationModel


class _Bar(ProgressBar):
    """A progress bar that keeps what it is asked to print."""

    def __init__(self) -> None:
        super().__init__()
        self.printed: list[str] = []
        self._enabled = True

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def print(self, *args: Any, **kwargs: Any) -> None:
        self.printed.append(" ".join(map(str, args)))


def _data() -> SyntheticDataModule:
    return SyntheticDataModule(num_train=4, num_val=2, num_test=2, image_size=(32, 32), batch_size=2, num_workers=0)


def _module(data: SyntheticDataModule) -> ContrastSegModule:
    net = SegmentationModel(8, encoder=Encoder("resnet18"), decoder=partial(HRNetV2Head, channels=16))
    return ContrastSegModule(net, num_classes=8, class_groups=data.class_groups)


def _trainer(**kwargs: Any) -> Trainer:
    return Trainer(accelerator="cpu", enable_model_summary=False, enable_checkpointing=False, **kwargs)


def test_fit_and_test_print_through_the_bar_and_write_the_files(tmp_path: Path) -> None:
    data, bar = _data(), _Bar()
    module = _module(data)
    trainer = _trainer(max_steps=2, limit_val_batches=1, num_sanity_val_steps=1, callbacks=[bar],
                       logger=CSVLogger(str(tmp_path), name="run", version=0))
    trainer.fit(module, data)
    assert len(bar.printed) == 1, bar.printed  # the validation, not the sanity check
    assert sum(isinstance(c, EvalReport) for c in trainer.callbacks) == 1  # added by the module
    table = bar.printed[0]
    assert "val, epoch 0, step 2" in table and "mIoU" in table and "mIoU stuff:" in table
    assert all(name in table for name in data.class_names)
    folder = tmp_path / "run" / "version_0"
    scores = json.loads((folder / "val_metrics.json").read_text())
    assert scores["step"] == 2 and abs(scores["mIoU"] - float(trainer.logged_metrics["val/mIoU"])) < 1e-5
    assert (folder / "val_metrics.csv").read_text().startswith("class,iou,acc,pixels")
    trainer.test(module, data, verbose=False)
    assert len(bar.printed) == 2 and "test, epoch" in bar.printed[1]
    assert (folder / "test_metrics.json").is_file() and (folder / "test_metrics.csv").is_file()


def test_without_a_bar_the_table_goes_to_lightnings_info_log(tmp_path: Path, monkeypatch) -> None:
    logged: list[str] = []
    monkeypatch.setattr(eval_report, "rank_zero_info", logged.append)
    data = _data()
    _trainer(logger=False, enable_progress_bar=False, default_root_dir=tmp_path).validate(_module(data), data,
                                                                                          verbose=False)
    assert len(logged) == 1 and "mIoU" in logged[0]
    assert not list(tmp_path.rglob("*_metrics.*"))  # no logger: no run folder, no files


@pytest.mark.parametrize("bar", [TQDMProgressBar, RichProgressBar])
def test_lightnings_bars_print_it_after_validate(bar: type, tmp_path: Path, capsys) -> None:
    # Lightning's TQDM bar prints only through a running bar, and validate's has closed when the report comes.
    data = _data()
    _trainer(logger=False, default_root_dir=tmp_path, callbacks=[bar()]).validate(_module(data), data, verbose=False)
    assert "val, epoch 0, step 0" in capsys.readouterr().out
