"""The benchmark scripts still run (tiny shapes, one repeat); their numbers are not checked here."""

import pytest
import torch

from contrastseg.benchmarks import contrastive_loss, train_step


def test_contrastive_loss_benchmark_runs() -> None:
    for impl in ("baseline", "contrastseg"):
        ms, mib, _ = contrastive_loss._measure(impl, ("quadratic", 64), 1.0, "cpu", 1)
        assert ms > 0 and mib >= 0
        ms, _, _ = contrastive_loss._measure(impl, ("Cityscapes-like", 2, 128, 256, 19), 0.5, "cpu", 1)
        assert ms > 0
    assert contrastive_loss.sampler_ms(("Cityscapes-like", 2, 128, 256, 19), 0.5, "cpu", 1) > 0


def test_train_step_benchmark_runs() -> None:
    seconds, _, size = train_step._measure("UPerNet-Swin-T", True, 0.125, 2, "cpu", 1, "bf16")  # PPM BN needs 2 images
    assert seconds > 0 and size == (64, 64)


def test_data_pipelines_yield_the_same_kind_of_items(tmp_path) -> None:
    from contrastseg.benchmarks import data_pipeline as dp
    from contrastseg.data import PaperTrainTransform, PascalContextDataset

    dp.fake_pascal_context(tmp_path, 2)
    ours = PascalContextDataset(tmp_path, "train", PaperTrainTransform((64, 96)))
    albumentations = dp.AlbumentationsPipeline(ours, (64, 96))
    for dataset in (ours, albumentations, dp.TorchvisionPipeline(ours.pairs, ours.lut, (64, 96))):
        item = dataset[0]
        assert item["image"].shape == (3, 64, 96) and item["image"].dtype == torch.float32
        assert item["mask"].shape == (64, 96) and item["mask"].dtype == torch.int64
        assert -3 < item["image"].mean() < 3 and set(item["mask"].unique().tolist()) <= set(range(59)) | {255}
    assert dp.rate(albumentations, 0, 2) > 0


def test_camvid_comparison_is_a_preset_of_contrastseg_compare() -> None:
    """The two CamVid configs and the root go to contrastseg compare; the other options pass through (a failed run
    stopping the others is tested with compare, tests/test_compare.py)."""
    from contrastseg.benchmarks import camvid_comparison

    args = camvid_comparison.compare_args(["--root", "/data/camvid", "--seeds", "0", "1", "--parallel", "6",
                                           "--cpu-reduced", "--", "--trainer.check_val_every_n_epoch=5"])
    split = args.index("--")
    options, fit = args[:split], args[split + 1:]
    assert options[options.index("--config") + 1].endswith("experiments/camvid_ce.yaml")
    assert options[options.index("--config-b") + 1].endswith("experiments/camvid_contrastive.yaml")
    assert options[options.index("--name-b") + 1] == "CE + ms + cs" and "--parallel" in options
    assert options[options.index("--seeds") + 1:options.index("--seeds") + 3] == ["0", "1"]
    assert fit[0] == "--data.init_args.root=/data/camvid" and "--trainer.max_epochs=12" in fit
    assert fit[-1] == "--trainer.check_val_every_n_epoch=5"  # the user's arguments last: they win
    assert camvid_comparison.compare_args(["--from-runs", "runs/x", "--budget", "time"]) == [
        "--from-runs", "runs/x", "--budget", "time"]


def _gpu_all(tmp_path, monkeypatch, **env):
    """contrastseg.benchmarks.gpu_all with a stand-in for the interpreter that logs its arguments."""
    import contextlib
    import io
    import os

    from contrastseg.benchmarks import gpu_all

    tmp_path.mkdir(parents=True, exist_ok=True)
    log = tmp_path / "calls.txt"
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\necho "python $*" >> {log}\n')
    python.chmod(0o755)
    monkeypatch.chdir(tmp_path)  # the CamVid part's runs folder is relative
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert gpu_all.main([str(tmp_path / "out")], python=str(python), env={**os.environ, **env}) == 0
    calls = log.read_text().splitlines() if log.exists() else []
    return printed.getvalue(), [c for c in calls if c.startswith("python -m ")]


def test_gpu_all_runs_only_the_parts_asked_for(tmp_path, monkeypatch) -> None:
    _, calls = _gpu_all(tmp_path, monkeypatch, PARTS="camvid")
    assert any("contrastseg.benchmarks.camvid_comparison" in c for c in calls)
    assert not any("pytest" in c for c in calls), "the CUDA tests run only with PARTS containing tests"
    _, calls = _gpu_all(tmp_path / "2", monkeypatch, PARTS="kernels tests")
    assert [c.split()[2] for c in calls] == ["contrastseg.benchmarks.infonce_kernels", "pytest"]
    assert calls[0].split()[3:] == ["--split"], "KERNEL_ARGS defaults to --split"
    _, calls = _gpu_all(tmp_path / "3", monkeypatch, PARTS="step stepamp", STEP_ARGS="--scale 0.5")
    assert calls == ["python -m contrastseg.benchmarks.train_step --scale 0.5",
                     "python -m contrastseg.benchmarks.train_step --amp bf16 --families HRNetV2-W48 UPerNet-Swin-T "
                     "--scale 0.5"]


def test_gpu_all_skips_parts_once_the_budget_is_spent(tmp_path, monkeypatch) -> None:
    out, calls = _gpu_all(tmp_path, monkeypatch, PARTS="loss step camvid", BUDGET_S="10")
    assert not calls
    assert "contrastive loss: skipped" in out and "CamVid comparison: skipped" in out


def _allocate_mib(mib, repeats, threads=None):
    """A step that holds ``mib`` MiB at its peak and frees it, timed as the benchmarks time theirs."""
    import torch

    from contrastseg.benchmarks._harness import timed

    if threads:
        torch.set_num_threads(threads)
    seconds, peak = timed(lambda: torch.ones(mib * 2**18).sum(), "cpu", repeats)
    return seconds, peak, torch.get_num_threads()


@pytest.mark.slow  # two fresh processes, about 25 s: keeps the default suite under 8 minutes
def test_cpu_memory_is_the_steps_own() -> None:
    """Freed memory returns to the system in the memory process, so every repeat's peak is the step's 40 MiB
    (glibc's reuse would hide part of it); options reach the child processes."""
    from contrastseg.benchmarks._harness import cpu_time_and_memory

    seconds, peak, threads = cpu_time_and_memory(_allocate_mib, 40, repeats=3, threads=1)
    assert seconds > 0 and 38 <= peak <= 44 and threads == 1


def test_baseline_computes_the_same_loss() -> None:
    """The per-pair-loop baseline and our loss agree on average over sampler draws (each draws its own anchors)."""
    import torch

    from contrastseg.losses import MultiScaleContrastiveLoss

    labels = contrastive_loss.realistic_labels(2, 128, 256, 19, seed=0)
    g = torch.Generator().manual_seed(1)
    emb = [torch.randn(2, 32, 128 // s, 256 // s, generator=g) for s in contrastive_loss.STRIDES]
    ours, base = [], []
    for seed in range(4):
        torch.manual_seed(seed)
        base.append(float(contrastive_loss.baseline_loss(emb, labels)))
        ours.append(float(MultiScaleContrastiveLoss()(emb, labels).total))
    assert abs(sum(ours) - sum(base)) / sum(base) < 0.01
