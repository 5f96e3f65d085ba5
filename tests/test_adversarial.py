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
    # Each run starts its own W&B service, as a separate job would: an in-process W&B test of this session leaves
    # WANDB_SERVICE set, and a service shared across runs keeps an ended run's id "in use".
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_SERVICE")}
    return {**inherited, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "WANDB_MODE": "offline", **extra}


def _tiny(root: Path, *extra: str, config: str = "experiments/quickstart.yaml", data: tuple[str, ...] = ()
          ) -> list[str]:
    """A quickstart config shrunk to seconds: resnet18, 64x64 scenes, no workers, CPU (``data``: arguments that
    replace the data module, given before its options)."""
    return [
        "--config", config, *data, "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false",
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_split_smaller_than_the_process_count_is_one_line_error(tmp_path: Path) -> None:
    result = _contrastseg("validate", *_tiny(tmp_path, "--data.init_args.num_val=1"), "--trainer.devices=2",
                          "--trainer.strategy=ddp", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "the val split has 1 image(s), fewer than the 2 processes" in result.stderr


# ------------------------------------------------------------------------------- 2. --ckpt_path last and seeds


def _seed_of(run: Path) -> int:
    import yaml

    return yaml.safe_load((run / "config.yaml").read_text())["seed_everything"]


def _steps(run: Path) -> int:
    import torch

    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_slurm_seed_sweep_gives_one_run_per_seed(tmp_path: Path) -> None:
    """experiments/slurm.sh passes --ckpt_path last to every job: seed 1 resumed seed 0's run (and overwrote its
    config.yaml), so a sweep's seeds collapsed into one run. Runs the real script with a stand-in `srun`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m "$@"\n')  # srun contrastseg fit ...
    (bin_dir / "srun").chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    root = tmp_path / "runs"

    def job(seed: int, epochs: int) -> subprocess.CompletedProcess:
        args = [a for a in _tiny(root, f"--seed_everything={seed}", f"--trainer.max_epochs={epochs}",
                                 "--model.lr_scheduler.init_args.total_steps=4")[2:]]  # the config is slurm.sh's $1
        result = subprocess.run(["bash", "experiments/slurm.sh", "experiments/quickstart.yaml", *args,
                                 "--trainer.devices=1", "--trainer.num_nodes=1"], cwd=REPO, env=_env(**env),
                                capture_output=True, text=True, timeout=600, check=False)
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    job(0, 1)
    second = job(1, 1)
    assert "not resuming" in second.stderr and "seed_everything: 0 -> 1" in second.stderr
    runs = sorted((root / "quickstart").iterdir())
    assert [_seed_of(r) for r in runs] == [0, 1], "one run folder per seed"
    requeued = job(0, 2)  # seed 0 requeued with a longer schedule: continues its own run
    assert "resuming" in requeued.stderr and "version_0" in requeued.stderr
    assert sorted(p.name for p in (root / "quickstart").iterdir()) == ["version_0", "version_1"]
    assert (_steps(runs[0]), _steps(runs[1])) == (4, 2) and [_seed_of(r) for r in runs] == [0, 1]
    # Evaluating with --ckpt_path last picks the run of the same seed, whatever ran last.
    result = _contrastseg("validate", *_tiny(root, "--seed_everything=1", "--model.lr_scheduler.init_args.total_steps=4"),
                          "--ckpt_path=last")
    assert f"loading {runs[1] / 'checkpoints' / 'last.ckpt'}" in result.stderr


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_wandb_seed_sweep_gives_one_run_per_seed(tmp_path: Path) -> None:
    """The seed sweep's command (`contrastseg fit ${args} --config experiments/_wandb.yaml`), with --ckpt_path last
    as a requeued agent would add it: each seed is its own W&B run."""
    import yaml

    sweep = yaml.safe_load((REPO / "experiments" / "sweeps" / "ablation_seeds.yaml").read_text())
    command = sweep["command"]
    at = command.index("${args}")
    root = tmp_path / "runs"
    for seed in (0, 1, 0):
        args = [*command[1:at], "--config=experiments/quickstart.yaml", f"--seed_everything={seed}",
                *command[at + 1:], *_tiny(root)[2:], "--trainer.max_epochs=1", "--ckpt_path=last"]
        _contrastseg(*args, WANDB_DIR=str(tmp_path))
    runs = [p.parent.parent for p in root.rglob("checkpoints/last.ckpt")]
    assert sorted(_seed_of(r) for r in runs) == [0, 1], "the second seed-0 job resumed seed 0, seed 1 is its own"


# ------------------------------------------------------------------------------------- 3. runs started together


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_runs_started_together_get_their_own_folders(tmp_path: Path) -> None:
    """Both runs chose version_0 (CSVLogger lists folders), and one checkpoint ended up beside the other's config."""
    import torch
    import yaml

    meet = ("--data=tests.fault_helpers.MeetingSyntheticData", f"--data.meet={tmp_path / 'meet'}")
    procs = [subprocess.Popen([sys.executable, "-m", "contrastseg", "fit", *_tiny(tmp_path / "runs", data=meet),
                               "--trainer.max_steps=1", f"--model.optimizer.init_args.lr={lr}"], cwd=REPO, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for lr in (0.01, 0.05)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    runs = sorted((tmp_path / "runs" / "quickstart").iterdir())
    assert len(runs) == 2
    lrs = set()
    for run in runs:
        config = yaml.safe_load((run / "config.yaml").read_text())
        ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        lr = config["model"]["optimizer"]["init_args"]["lr"]
        assert ckpt["hyper_parameters"]["optimizer"]["init_args"]["lr"] == lr  # the checkpoint beside its config
        assert ckpt["optimizer_states"][0]["param_groups"][0]["initial_lr"] == lr
        lrs.add(lr)
    assert lrs == {0.01, 0.05}


def test_claim_version_is_atomic(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from contrastseg.runs import claim_version

    with ThreadPoolExecutor(8) as pool:
        versions = list(pool.map(lambda _: claim_version(tmp_path), range(16)))
    assert sorted(versions) == list(range(16))


@pytest.mark.slow
def test_a_pinned_version_never_replaces_another_runs_config(tmp_path: Path) -> None:
    pinned = "--trainer.logger.init_args.version=7"
    _contrastseg("fit", *_tiny(tmp_path, pinned, "--trainer.max_steps=1"))
    result = _contrastseg("fit", *_tiny(tmp_path, pinned, "--trainer.max_steps=1", "--seed_everything=3"),
                          check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "already holds the config.yaml of another run" in result.stderr and "seed_everything" in result.stderr
    assert _seed_of(tmp_path / "quickstart" / "version_7") == 0


# ------------------------------------------------------------------------------ 9, 10. batches and resumed batches


def test_training_split_smaller_than_a_batch_is_an_error(tmp_path: Path) -> None:
    """3 training images and batch 4 (drop_last): Lightning printed "No training batches", saved nothing, exit 0."""
    result = _contrastseg("fit", *_tiny(tmp_path, "--data.init_args.num_train=3"), check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "the train split has 3 images, fewer than one batch of 4" in result.stderr


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_resuming_with_another_batch_size_names_both(tmp_path: Path) -> None:
    _contrastseg("fit", *_tiny(tmp_path, "--trainer.max_steps=1"))  # 1 of 2 batches: stopped inside epoch 0
    ckpt = str(next(tmp_path.rglob("last.ckpt")))
    result = _contrastseg("fit", *_tiny(tmp_path, "--data.init_args.batch_size=2", f"--ckpt_path={ckpt}",
                                        "--trainer.max_steps=3"), check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "batch_size=4 on 1 process(es), this run has batch_size=2 on 1" in result.stderr
    assert "4 items into epoch 0" in result.stderr
    _contrastseg("fit", *_tiny(tmp_path / "b", "--trainer.max_epochs=1"))  # a whole epoch: resumable, with a warning
    ckpt = str(next((tmp_path / "b").rglob("last.ckpt")))
    result = _contrastseg("fit", *_tiny(tmp_path / "b", "--data.init_args.batch_size=2", f"--ckpt_path={ckpt}",
                                        "--trainer.max_epochs=2"))
    assert "batch_size=4 on 1 process(es), this run has batch_size=2 on 1" in result.stderr
    assert "the next epoch starts with the new batches" in result.stderr


# ------------------------------------------------------------------------- 11, 12. loading and writing checkpoints


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _evil_checkpoint(path: Path, marker: Path) -> Path:
    import torch

    torch.save({"state_dict": {}, "payload": _Payload(marker)}, path)
    return path


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = _evil_checkpoint(tmp_path / "evil.ckpt", marker)
    result = _contrastseg("validate", *_tiny(tmp_path / "runs"), f"--ckpt_path={evil}", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"refusing to load checkpoint {evil}" in result.stderr and not marker.exists()


def test_predict_folder_refuses_a_checkpoint_that_would_run_code(tmp_path: Path, capsys) -> None:
    import numpy as np
    from PIL import Image

    from contrastseg.cli import main

    marker = tmp_path / "pwned"
    evil = _evil_checkpoint(tmp_path / "evil.ckpt", marker)
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    with pytest.raises(SystemExit) as exit_info:
        main(["predict-folder", str(evil), str(tmp_path / "images"), str(tmp_path / "out")])
    assert exit_info.value.code == 2 and not marker.exists()
    assert f"refusing to load checkpoint {evil}" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_checkpoint_url_is_loaded_with_weights_only(tmp_path: Path) -> None:
    """Lightning unpickled http(s) checkpoints with weights_only=False: a crafted file ran code."""
    import functools
    import http.server
    import threading

    marker = tmp_path / "pwned"
    _evil_checkpoint(tmp_path / "evil.ckpt", marker)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/evil.ckpt"
        result = _contrastseg("validate", *_tiny(tmp_path / "runs"), f"--ckpt_path={url}", check=False,
                              TORCH_HOME=str(tmp_path / "torch_home"), NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    finally:
        server.shutdown()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "refusing to load checkpoint" in result.stderr and not marker.exists()


def test_checkpoints_respect_the_umask(tmp_path: Path) -> None:
    """mkstemp made every checkpoint 0600 whatever the umask: teammates on a shared cluster could not read them."""
    from contrastseg.callbacks import AtomicCheckpointIO

    old = os.umask(0o022)
    try:
        AtomicCheckpointIO().save_checkpoint({"a": 1}, tmp_path / "last.ckpt")
        os.umask(0o002)
        AtomicCheckpointIO().save_checkpoint({"a": 1}, tmp_path / "group.ckpt")
    finally:
        os.umask(old)
    assert (tmp_path / "last.ckpt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "group.ckpt").stat().st_mode & 0o777 == 0o664
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["missing", "empty", "truncated", "folder"])
def test_a_bad_ckpt_path_is_one_line_and_leaves_no_run_folder(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "model.ckpt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        _contrastseg("fit", *_tiny(tmp_path / "src", "--trainer.max_steps=1"))
        whole = next((tmp_path / "src").rglob("last.ckpt")).read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
    elif kind == "folder":
        path.mkdir()
    result = _contrastseg("fit", *_tiny(tmp_path / "runs"), f"--ckpt_path={path}", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    line = [ln for ln in result.stderr.splitlines() if ln.startswith("contrastseg: error:")]
    assert len(line) == 1 and str(path) in line[0], result.stderr[-2000:]
    assert {"missing": "no such file", "empty": "empty", "truncated": "truncated",
            "folder": "not a file"}[kind] in line[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("version_*"))


def test_a_full_disk_during_a_save_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    import errno

    from contrastseg.callbacks import checkpoint
    from contrastseg.cli import main

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", full)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *_tiny(tmp_path, "--trainer.max_steps=1")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("contrastseg: error:")]
    assert len(lines) == 1 and "cannot write checkpoint" in lines[0] and "No space left on device" in lines[0]


# ----------------------------------------------------------------------------------------------- SyncBatchNorm


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sync_batchnorm_on_the_cpu_is_turned_off_with_a_notice(tmp_path: Path) -> None:
    """The paper configs set sync_batchnorm: DDP on the CPU failed with a 57-line traceback."""
    result = _contrastseg("fit", *_tiny(tmp_path, "--trainer.max_steps=1"), "--trainer.sync_batchnorm=true",
                          "--trainer.strategy=ddp", "--trainer.devices=2")
    assert "trainer.sync_batchnorm turned off: it needs GPUs and this run is on the CPU" in result.stderr


@pytest.mark.parametrize(("accelerator", "devices", "nodes", "off"), [
    ("cpu", 4, 1, True), ("gpu", 1, 1, True), ("gpu", "1", 1, True), ("gpu", [3], 1, True), ("gpu", 2, 1, False),
    ("gpu", 1, 2, False), ("gpu", "0,1", 1, False)])
def test_sync_batchnorm_stays_on_only_across_gpu_processes(accelerator, devices, nodes, off) -> None:
    from jsonargparse import Namespace

    from contrastseg.cli import _sync_batchnorm_off

    config = Namespace(trainer=Namespace(sync_batchnorm=True, accelerator=accelerator, devices=devices,
                                         num_nodes=nodes))
    notice = _sync_batchnorm_off(config)
    assert (notice is not None) == off and config.trainer.sync_batchnorm is not off


# ------------------------------------------------------------------------------------------ pretrained offline


@pytest.mark.timeout(120)
def test_pretrained_weights_offline_fail_fast_naming_the_key(tmp_path: Path) -> None:
    import time

    start = time.monotonic()
    result = _contrastseg("fit", *_tiny(tmp_path), "--model.net.init_args.encoder.pretrained=true", check=False,
                          HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    line = next(ln for ln in result.stderr.splitlines() if ln.startswith("contrastseg: error:"))
    assert "model.net.init_args.encoder.checkpoint_path" in line and "pretrained: false" in line
    assert time.monotonic() - start < 60  # start-up included; the hub used to be retried for about 45 s
