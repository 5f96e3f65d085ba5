"""LineProgress: a plain line every few training batches, for logs written to a file."""

from __future__ import annotations

from functools import partial

from lightning import Trainer

from contrastseg import ContrastSegModule
from contrastseg.callbacks import LineProgress
from contrastseg.data import SyntheticDataModule
from contrastseg.models import Encoder, HRNetV2Head, SegmentationModel


def test_a_line_every_n_batches_and_at_the_epochs_end(tmp_path, capsys) -> None:
    data = SyntheticDataModule(num_train=20, num_val=2, image_size=(32, 32), batch_size=4, num_workers=0)
    net = SegmentationModel(data.num_classes, encoder=Encoder("resnet18"), decoder=partial(HRNetV2Head, channels=16))
    trainer = Trainer(max_epochs=2, callbacks=[LineProgress(every_n_steps=2)], logger=False,
                      enable_checkpointing=False, enable_model_summary=False, default_root_dir=tmp_path,
                      accelerator="cpu", num_sanity_val_steps=0)
    trainer.fit(ContrastSegModule(net, num_classes=data.num_classes), datamodule=data)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("epoch ")]
    # 5 batches per epoch: lines after batches 2, 4 and 5 (the last), in both epochs.
    assert [ln.split()[:4] for ln in lines] == [
        ["epoch", f"{e}/2", "batch", f"{b}/5"] for e in (1, 2) for b in (2, 4, 5)]
    assert all("it/s" in ln and "train/loss" in ln for ln in lines)
