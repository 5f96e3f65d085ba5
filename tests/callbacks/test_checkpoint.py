import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from contrastseg.callbacks import AtomicCheckpointIO
from contrastseg.runs import runs_folder, version_folder


def test_save_and_load(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    io.save_checkpoint({"w": torch.arange(4)}, tmp_path / "sub" / "last.ckpt")
    assert torch.equal(io.load_checkpoint(tmp_path / "sub" / "last.ckpt")["w"], torch.arange(4))
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["last.ckpt"]


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"w": torch.zeros(3)}, path)

    def half_then_fail(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("contrastseg.callbacks.checkpoint.torch.save", half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"w": torch.ones(3)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.zeros(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind


CHILD = """
import sys, torch
from contrastseg.callbacks import AtomicCheckpointIO
io, path = AtomicCheckpointIO(), sys.argv[1]
io.save_checkpoint({"version": 1, "w": torch.zeros(10)}, path)
print("saved v1", flush=True)
io.save_checkpoint({"version": 2, "w": torch.randn(100_000_000)}, path)  # 400 MB: killed while writing
print("saved v2", flush=True)
"""


@pytest.mark.timeout(120)
def test_sigkill_during_a_save_leaves_the_previous_checkpoint_loadable(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "saved v1"
    deadline = time.time() + 60
    while not list(tmp_path.glob(".last.ckpt.*.tmp")) and time.time() < deadline:
        time.sleep(0.001)
    child.kill()
    child.wait()
    assert list(tmp_path.glob(".last.ckpt.*.tmp")), "the child was not caught while writing"
    assert torch.load(path, weights_only=True)["version"] == 1


def test_runs_and_version_folders(tmp_path: Path) -> None:
    from lightning import Trainer
    from lightning.pytorch.loggers import CSVLogger

    assert version_folder(3) == "version_3" and version_folder("abc123") == "abc123"
    trainer = Trainer(logger=CSVLogger(tmp_path / "runs", name="exp"), default_root_dir=tmp_path)
    assert runs_folder(trainer) == tmp_path / "runs" / "exp"
    assert runs_folder(Trainer(logger=False, default_root_dir=tmp_path)) is None
