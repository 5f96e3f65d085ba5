"""Workflows a hurried researcher runs that gave silently wrong numbers or lost runs: each now gives the right result
or a one-line error. Run as real ``contrastseg`` processes where processes are what matters (DDP, races, resumes)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "WANDB_MODE": "offline", **extra}


def _tiny(root: Path, *extra: str, config: str = "experiments/quickstart.yaml") -> list[str]:
    """A quickstart config shrunk to seconds: resnet18, 64x64 scenes, no workers, CPU."""
    return [
        "--config", config, "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", "--model.net.init_args.encoder.name=resnet18",
        "--data.init_args.image_size=[64, 64]", "--data.init_args.num_workers=0", "--data.init_args.num_train=8",
        "--data.init_args.num_val=3", "--data.init_args.batch_size=4", f"--trainer.logger.init_args.save_dir={root}",
        *extra,
    ]


def _contrastseg(*args: str, check: bool = True, timeout: int = 600, **env: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "contrastseg", *args], cwd=REPO, env=_env(**env),
                            capture_output=True, text=True, timeout=timeout, check=False)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def _csv_rows(path: Path) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if v} for row in csv.DictReader(path.open())]


# ---------------------------------------------------------------------------------------------- 1. DDP evaluation


@pytest.mark.timeout(600)
def test_ddp_validation_scores_every_image_once(tmp_path: Path) -> None:
    """3 validation images on 2 processes: Lightning's DistributedSampler padded the split to 4, so one image was
    scored twice (mIoU and loss differed from one process). The scores must equal one process's exactly."""
    args = ("--data.init_args.val_batch_size=1",)
    _contrastseg("validate", *_tiny(tmp_path / "one", *args), "--trainer.devices=1")
    _contrastseg("validate", *_tiny(tmp_path / "two", *args), "--trainer.devices=2", "--trainer.strategy=ddp")
    one = json.loads(next((tmp_path / "one").rglob("val_metrics.json")).read_text())
    two = json.loads(next((tmp_path / "two").rglob("val_metrics.json")).read_text())
    assert one == two
    pixels = sum(c["pixels"] for c in one["per_class"])
    assert pixels == 3 * 64 * 64  # every pixel of the three images counted once (no class is ignore here)
    loss_one = float(_csv_rows(next((tmp_path / "one").rglob("metrics.csv")))[0]["val/loss"])
    loss_two = float(_csv_rows(next((tmp_path / "two").rglob("metrics.csv")))[0]["val/loss"])
    assert loss_two == pytest.approx(loss_one, rel=1e-6)


def test_eval_sampler_splits_without_padding() -> None:
    from contrastseg.data.base import EvalDistributedSampler

    shares = [list(EvalDistributedSampler(range(5), num_replicas=3, rank=r)) for r in range(3)]
    assert sorted(i for share in shares for i in share) == [0, 1, 2, 3, 4]
    assert [len(EvalDistributedSampler(range(5), num_replicas=3, rank=r)) for r in range(3)] == [2, 2, 1]


def test_split_smaller_than_the_process_count_is_one_line_error(tmp_path: Path) -> None:
    result = _contrastseg("validate", *_tiny(tmp_path, "--data.init_args.num_val=1"), "--trainer.devices=2",
                          "--trainer.strategy=ddp", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "the val split has 1 image(s), fewer than the 2 processes" in result.stderr
