"""An interrupted run, resumed from last.ckpt, ends where an uninterrupted one would (CPU, deterministic)."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from contrastseg.cli import main
from tests.fault_helpers import weights

REPO = Path(__file__).resolve().parents[1]


def _args(root: Path, max_steps: int, total_steps: int = 6) -> list[str]:
    return [
        "fit", "--config", str(REPO / "experiments/quickstart_contrastive.yaml"), f"--trainer.max_steps={max_steps}",
        "--trainer.max_epochs=-1", "--trainer.deterministic=true", "--trainer.log_every_n_steps=1",
        "--trainer.accelerator=cpu",  # deterministic=true raises on CUDA (no deterministic bilinear backward)
        "--data.init_args.num_train=8", "--data.init_args.num_val=2", "--data.init_args.batch_size=4",
        "--data.init_args.image_size=[64, 64]", "--data.init_args.num_workers=0", "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={root}", "--contrast.warmup_steps=3",
        # the same schedule whether the run is cut or not
        f"--model.lr_scheduler.init_args.total_steps={total_steps}",
    ]


def _fit(root: Path, max_steps: int, *extra: str):
    return main([*_args(root, max_steps), *extra])


def _read(path: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if v} for r in csv.DictReader(path.open())]


def _rows(cli) -> list[dict]:
    return _read(Path(cli.trainer.logger.log_dir) / "metrics.csv")


def test_resumed_run_matches_uninterrupted_run(tmp_path: Path) -> None:
    whole = _fit(tmp_path / "whole", 6)  # 3 epochs of 2 steps
    first = _fit(tmp_path / "split", 2)
    ckpt = next((tmp_path / "split").rglob("last.ckpt"))
    resumed = _fit(tmp_path / "split", 6, f"--ckpt_path={ckpt}")
    assert resumed.trainer.global_step == whole.trainer.global_step == 6 and first.trainer.global_step == 2
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    # Every metric logged after the interruption is identical. (Lightning numbers the resumed run's CSV rows one
    # step later; the values, epochs and order are the same. The health monitor's overhead is a time.)
    def values(rows):
        return [{k: v for k, v in r.items() if k not in ("step", "train/contrast_health/overhead")} for r in rows]

    later = values(_rows(whole))[len(_rows(first)):]
    assert later == values(_rows(resumed)) and any("val/mIoU" in r for r in later)


@pytest.mark.parametrize("subcommand", ["validate", "predict"])
def test_ckpt_path_last_loads_the_run_for_evaluation(tmp_path: Path, subcommand: str) -> None:
    """validate / test / predict with --ckpt_path last load the newest last.ckpt of the run name (Lightning alone
    looks in the new, empty version folder, warns and goes on with an untrained model)."""
    _fit(tmp_path, 2)
    ckpt = torch.load(next(tmp_path.rglob("last.ckpt")), map_location="cpu", weights_only=False)["state_dict"]
    limit = {"validate": "limit_val_batches", "predict": "limit_predict_batches"}[subcommand]
    cli = main([subcommand, *_args(tmp_path, 2)[1:], "--ckpt_path=last", f"--trainer.{limit}=1"])
    for name, value in cli.model.state_dict().items():
        assert torch.equal(value, ckpt[name]), name


def _cli(root: Path, max_steps: int, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "contrastseg", *_args(root, max_steps, 4), *extra], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ckpt_path_last_resumes_the_newest_run_of_the_name(tmp_path: Path) -> None:
    # As experiments/slurm.sh runs it: every (re)start passes --ckpt_path last. The logger's next version folder
    # (where Lightning alone looks) is empty; the run name's newest last.ckpt is resumed, in its own folder.
    _cli(tmp_path / "whole", 4)  # 2 epochs of 2 steps
    split = tmp_path / "split"
    first = _cli(split, 2, "--ckpt_path=last")
    assert "no last.ckpt in" in first.stderr and "starting a new run" in first.stderr
    second = _cli(split, 4, "--ckpt_path=last")
    assert "resuming" in second.stderr and "no last checkpoint" not in second.stderr
    runs = split / "quickstart_contrastive"
    assert [p.name for p in runs.iterdir()] == ["version_0"], "logging continues in the resumed run's folder"
    ckpt = runs / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["global_step"] == 4
    whole = weights(tmp_path / "whole" / "quickstart_contrastive" / "version_0" / "checkpoints" / "last.ckpt")
    final = weights(ckpt)
    assert final.keys() == whole.keys()
    for name, value in whole.items():
        assert torch.equal(final[name], value), name
    # metrics.csv holds the first run's rows, then the resumed run's: the values of the uninterrupted run (all but
    # the health monitor's overhead, a time).
    def values(path: Path) -> list[dict]:
        return [{k: v for k, v in r.items() if k not in ("step", "train/contrast_health/overhead")}
                for r in _read(path)]

    expected = values(tmp_path / "whole" / "quickstart_contrastive" / "version_0" / "metrics.csv")
    assert values(runs / "version_0" / "metrics.csv") == expected and any("val/mIoU" in r for r in expected)
    assert (runs / "version_0" / "val_metrics.json").is_file() and (runs / "version_0" / "config.yaml").is_file()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_process_ddp_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    # Two processes (gloo on CPU): every process continues from the saved random streams (process 0's, which
    # equal every other process's), so the resumed run ends with the uninterrupted run's weights.
    ddp = ("--trainer.strategy=ddp", "--trainer.devices=2")
    _cli(tmp_path / "whole", 4, *ddp)
    _cli(tmp_path / "split", 2, *ddp)
    _cli(tmp_path / "split", 4, "--ckpt_path=last", *ddp)
    whole = weights(next((tmp_path / "whole").rglob("last.ckpt")))
    ckpt = tmp_path / "split" / "quickstart_contrastive" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["global_step"] == 4
    final = weights(ckpt)
    assert final.keys() == whole.keys()
    for name, value in whole.items():
        assert torch.equal(final[name], value), name


@pytest.mark.slow
@pytest.mark.parametrize("term", ["PixelContrast", "RegionContrast"])
def test_a_resumed_run_continues_with_the_same_memory(tmp_path: Path, term: str) -> None:
    config = tmp_path / f"{term}.yaml"  # the quickstart with CE + the term, a small memory that wraps in 6 steps
    config.write_text(f"extends: {REPO / 'experiments/quickstart.yaml'}\nmodel:\n  losses:\n"
                      "    - class_path: contrastseg.losses.CrossEntropy\n"
                      f"    - class_path: contrastseg.losses.{term}\n"
                      "      init_args: {memory_size: 5, embedding_dim: 16}\n")

    def fit(root: Path, steps: int, *extra: str):
        overrides = [a for a in _args(root, steps)[3:] if not a.startswith("--contrast.")]  # after fit --config X
        return main(["fit", "--config", str(config), *overrides, *extra])

    whole = fit(tmp_path / "whole", 6)
    fit(tmp_path / "split", 2)
    resumed = fit(tmp_path / "split", 6, f"--ckpt_path={next((tmp_path / 'split').rglob('last.ckpt'))}")
    memories = [k for k in whole.model.state_dict() if ".memory." in k or "_memory." in k]
    assert memories and int(whole.model.state_dict()[memories[0].rsplit(".", 1)[0] + ".count"].sum()) > 0
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name  # the memories included, entry by entry
