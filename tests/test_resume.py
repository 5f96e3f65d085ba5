"""An interrupted run, resumed from last.ckpt, ends where an uninterrupted one would (CPU, deterministic)."""

import csv
from pathlib import Path

import torch

from contrastseg.cli import main

REPO = Path(__file__).resolve().parents[1]


def _fit(root: Path, max_steps: int, *extra: str):
    return main([
        "fit", "--config", str(REPO / "experiments/quickstart_contrastive.yaml"), f"--trainer.max_steps={max_steps}",
        "--trainer.max_epochs=-1", "--trainer.deterministic=true", "--trainer.log_every_n_steps=1",
        "--data.init_args.num_train=8", "--data.init_args.num_val=2", "--data.init_args.batch_size=4",
        "--data.init_args.image_size=[64, 64]", "--data.init_args.num_workers=0", "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={root}", "--contrast.warmup_steps=3",
        "--model.lr_scheduler.init_args.total_steps=6",  # the same schedule whether the run is cut or not
        *extra,
    ])


def _rows(cli) -> list[dict]:
    path = Path(cli.trainer.logger.log_dir) / "metrics.csv"
    return [{k: v for k, v in r.items() if v} for r in csv.DictReader(path.open())]


def test_resumed_run_matches_uninterrupted_run(tmp_path: Path) -> None:
    whole = _fit(tmp_path / "whole", 6)  # 3 epochs of 2 steps
    first = _fit(tmp_path / "split", 2)
    ckpt = next((tmp_path / "split").rglob("last.ckpt"))
    resumed = _fit(tmp_path / "split", 6, f"--ckpt_path={ckpt}")
    assert resumed.trainer.global_step == whole.trainer.global_step == 6 and first.trainer.global_step == 2
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    # Every metric logged after the interruption is identical. (Lightning numbers the resumed run's CSV rows one
    # step later; the values, epochs and order are the same.)
    def values(rows):
        return [{k: v for k, v in r.items() if k != "step"} for r in rows]

    later = values(_rows(whole))[len(_rows(first)):]
    assert later == values(_rows(resumed)) and any("val/mIoU" in r for r in later)
