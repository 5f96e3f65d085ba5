"""RNGState: the random streams are saved in every checkpoint and continue from it when training resumes."""

from __future__ import annotations

import random
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lightning import Trainer, seed_everything

from contrastseg import ContrastSegModule
from contrastseg.callbacks import LastCheckpoint, RNGState
from contrastseg.data import SyntheticDataModule
from contrastseg.losses import CrossEntropy, MultiScaleContrast
from contrastseg.models import Encoder, HRNetV2Head, SegmentationModel


def _draw() -> tuple[torch.Tensor, np.ndarray, float]:
    return torch.rand(4), np.random.rand(4), random.random()


def _module_written_states() -> dict:
    """The ``rng_states`` of a checkpoint as ``ContrastSegModule.on_save_checkpoint`` wrote it before the callback
    existed (same key, same layout)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(), "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
        "cuda": None, "cuda_current": None, "world_size": 1,
    }


def test_a_checkpoint_written_by_the_module_resumes_its_streams() -> None:
    seed_everything(3)
    checkpoint = {"rng_states": _module_written_states()}
    expected = _draw()
    seed_everything(4)  # a fresh process's streams
    callback = RNGState()
    trainer, module = SimpleNamespace(world_size=1), SimpleNamespace(device=torch.device("cpu"))
    callback.on_load_checkpoint(trainer, module, checkpoint)
    callback.on_train_start(trainer, module)
    got = _draw()
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]


def test_streams_saved_with_another_number_of_processes_are_left_alone() -> None:
    seed_everything(3)
    checkpoint = {"rng_states": {**_module_written_states(), "world_size": 2}}
    seed_everything(4)
    expected = _draw()
    seed_everything(4)
    callback = RNGState()
    trainer, module = SimpleNamespace(world_size=1), SimpleNamespace(device=torch.device("cpu"))
    callback.on_load_checkpoint(trainer, module, checkpoint)
    callback.on_train_start(trainer, module)
    assert torch.equal(_draw()[0], expected[0])


def _fit(root: Path, max_steps: int, ckpt_path: Path | None = None) -> ContrastSegModule:
    seed_everything(0)  # every (re)start seeds alike, as the CLI does: only the saved streams tell them apart
    net = SegmentationModel(8, encoder=Encoder("resnet18"), decoder=partial(HRNetV2Head, channels=16))
    module = ContrastSegModule(net, num_classes=8, losses=[CrossEntropy(), MultiScaleContrast(embedding_dim=16)],
                               contrast_health=False)
    data = SyntheticDataModule(num_train=8, num_val=2, image_size=(32, 32), batch_size=4, num_workers=0)
    trainer = Trainer(accelerator="cpu", max_steps=max_steps, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=root, deterministic=True,
                      callbacks=[LastCheckpoint(every_n_train_steps=0)])
    trainer.fit(module, data, ckpt_path=ckpt_path)
    assert sum(isinstance(c, RNGState) for c in trainer.callbacks) == 1  # added by the module
    return module


@pytest.mark.slow  # by default tests/test_resume.py resumes a contrastive run exactly, through the CLI
def test_a_plain_trainer_run_resumes_with_the_saved_streams(tmp_path: Path) -> None:
    whole = _fit(tmp_path / "whole", 4)  # 2 epochs of 2 steps; the contrastive term draws its anchors
    _fit(tmp_path / "split", 2)
    ckpt = next((tmp_path / "split").rglob("last.ckpt"))
    saved = torch.load(ckpt, weights_only=True)
    assert saved["rng_states"]["world_size"] == 1 and saved["rng_states"]["torch"].dtype == torch.uint8
    resumed = _fit(tmp_path / "split", 4, ckpt)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
