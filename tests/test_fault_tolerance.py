"""Runs survive faults: SIGTERM and SIGKILL mid-epoch, NaN losses, and dying data workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
import torch
import yaml
from lightning import Trainer
from torch.utils.data import get_worker_info

from contrastseg import ContrastSegModule, NonFiniteLossError
from contrastseg.callbacks import LastCheckpoint, NonFiniteLossGuard
from contrastseg.data import SyntheticDataModule
from contrastseg.data.synthetic_datamodule import SyntheticDataset
from contrastseg.losses import CrossEntropy
from contrastseg.models import Encoder, HRNetV2Head, SegmentationModel
from tests.fault_helpers import NaNAt, weights

REPO = Path(__file__).resolve().parents[1]
STEPS = 12  # 2 epochs of 6 batches


def _command(root: Path, every: int, slow: float, *extra: str) -> list[str]:
    callbacks = root / "callbacks.yaml"
    root.mkdir(parents=True, exist_ok=True)
    callbacks.write_text(yaml.safe_dump({"trainer": {"callbacks": [
        {"class_path": "contrastseg.callbacks.LastCheckpoint", "init_args": {"every_n_train_steps": every}},
        {"class_path": "tests.fault_helpers.SlowSteps",
         "init_args": {"seconds": slow, "progress": str(root / "progress.txt")}},
    ]}}))
    return [
        sys.executable, "-m", "contrastseg", "fit", "--config", "experiments/quickstart_contrastive.yaml",
        "--config", str(callbacks), f"--trainer.max_steps={STEPS}", "--trainer.max_epochs=-1",
        "--trainer.deterministic=true", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        "--data.init_args.num_train=24", "--data.init_args.num_val=2", "--data.init_args.batch_size=4",
        "--data.init_args.image_size=[64, 64]", "--data.init_args.num_workers=0",
        f"--model.lr_scheduler.init_args.total_steps={STEPS}", f"--trainer.logger.init_args.save_dir={root}", *extra,
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _latest(root: Path) -> Path:
    return max(root.rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)


def _progress(root: Path) -> int:
    try:
        return int((root / "progress.txt").read_text() or -1)
    except (FileNotFoundError, ValueError):
        return -1


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, torch.Tensor]:
    root = tmp_path_factory.mktemp("whole")
    subprocess.run(_command(root, 0, 0.0), cwd=REPO, env=_env(), check=True, capture_output=True, timeout=600)
    ckpt = _latest(root)
    assert torch.load(ckpt, weights_only=True)["global_step"] == STEPS
    return weights(ckpt)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_run_resumes_to_the_uninterrupted_weights(sig, uninterrupted, tmp_path: Path) -> None:
    # SIGTERM: no periodic saves, so a last.ckpt before the end can only be the one saved on the signal.
    # SIGKILL: nothing can be saved on the signal; the periodic saves (every 2 steps) are what is left.
    every, aim = (0, 3) if sig == signal.SIGTERM else (2, 5)
    run = subprocess.Popen(_command(tmp_path, every, 0.4), cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while _progress(tmp_path) < aim and run.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert run.poll() is None, run.communicate()[0][-3000:]
    run.send_signal(sig)
    output = run.communicate(timeout=300)[0]
    stopped_at = _progress(tmp_path)
    assert run.returncode == (143 if sig == signal.SIGTERM else -signal.SIGKILL), output[-3000:]
    ckpt = _latest(tmp_path)
    saved_step = torch.load(ckpt, weights_only=True)["global_step"]
    if sig == signal.SIGTERM:
        assert "stopped by SIGTERM" in output
        assert saved_step == stopped_at and saved_step % 6 != 0, (saved_step, stopped_at)  # mid-epoch, nothing lost
    else:
        assert saved_step % 2 == 0 and 0 < saved_step <= stopped_at < STEPS
    resumed = subprocess.run(_command(tmp_path, every, 0.0, f"--ckpt_path={ckpt}"), cwd=REPO, env=_env(),
                             capture_output=True, text=True, timeout=600, check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = weights(_latest(tmp_path))
    assert final.keys() == uninterrupted.keys()
    for name, value in uninterrupted.items():
        assert torch.equal(final[name], value), name


def _module(*terms) -> ContrastSegModule:
    net = SegmentationModel(8, encoder=Encoder("resnet18"), decoder=partial(HRNetV2Head, channels=16))
    return ContrastSegModule(net, num_classes=8, losses=[CrossEntropy(), *terms],
                             nonfinite="skip" if any(getattr(t, "skip", False) for t in terms) else "raise")


def _fit(module, root: Path, max_steps: int, **data) -> Trainer:
    data = SyntheticDataModule(**{"num_train": 16, "num_val": 2, "image_size": (32, 32), "batch_size": 4,
                                  "num_workers": 0, **data})
    trainer = Trainer(accelerator="cpu", max_steps=max_steps, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=root, limit_val_batches=0,
                      callbacks=[LastCheckpoint(every_n_train_steps=0)])
    trainer.fit(module, data)
    return trainer


def test_nan_loss_stops_with_step_and_term_and_keeps_the_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = _module()
    _fit(reference, tmp_path / "ref", 2)
    torch.manual_seed(0)
    module = _module(NaNAt(2))
    with pytest.raises(NonFiniteLossError, match=r"at step 2 .*nan_at=nan, nan_at_part=nan; batch files"):
        _fit(module, tmp_path / "run", 10)
    for (name, a), b in zip(reference.net.state_dict().items(), module.net.state_dict().values()):
        assert torch.equal(a, b), name  # the NaN batch changed nothing
    saved = torch.load(next((tmp_path / "run").rglob("last.ckpt")), weights_only=True)
    assert saved["global_step"] == 2 and all(torch.isfinite(v).all() for v in saved["state_dict"].values()
                                             if v.is_floating_point())


def test_nan_loss_can_skip_the_batch(tmp_path: Path) -> None:
    term = NaNAt(1)
    term.skip = True
    module = _module(term)
    with pytest.warns(UserWarning, match=r"non-finite training loss nan at step 1 .*batch skipped \(1 so far\)"):
        trainer = _fit(module, tmp_path, 4)
    # Lightning still counts the skipped batch as a step (the optimiser saw no gradients and changed nothing).
    guard = next(c for c in trainer.callbacks if isinstance(c, NonFiniteLossGuard))
    assert trainer.global_step == 4 and guard.skipped_batches == 1 and term.calls == 4
    assert all(torch.isfinite(p).all() for p in module.parameters())


class _DyingScenes(SyntheticDataset):
    """Scene 5 of the training split kills the worker process that reads it."""

    @property
    def pairs(self):
        return [(Path(f"/data/{self.split}/scene_{i:03d}.png"), None) for i in range(len(self))]

    def __getitem__(self, index):
        if self.split == "train" and index == 5 and get_worker_info() is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().__getitem__(index)


class _DyingData(SyntheticDataModule):
    def make_dataset(self, split, transform=None):
        return _DyingScenes(split, num_samples=8, image_size=(32, 32))


@pytest.mark.timeout(300)
def test_a_dead_data_worker_is_reported_with_its_file(tmp_path: Path, capfd) -> None:
    data = _DyingData(num_train=8, num_val=2, batch_size=4, num_workers=1, persistent_workers=False)
    trainer = Trainer(accelerator="cpu", max_steps=4, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, limit_val_batches=0,
                      default_root_dir=tmp_path)
    # PyTorch raises "DataLoader worker ... killed", or first a broken pipe to the worker, depending on timing.
    with pytest.raises((RuntimeError, ConnectionError, EOFError)) as info:
        trainer.fit(_module(), data)
    err = capfd.readouterr().err
    assert "a data loader worker died while reading /data/train/scene_005.png (train)" in err
    if sys.version_info >= (3, 11):
        chain, notes = info.value, []
        while chain is not None:
            notes += getattr(chain, "__notes__", [])
            chain = chain.__context__
        assert any("scene_005.png" in note for note in notes)
