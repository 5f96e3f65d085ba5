"""The benchmark scripts still run (tiny shapes, one repeat); their numbers are not checked here."""

from benchmarks import contrastive_loss, train_step


def test_contrastive_loss_benchmark_runs() -> None:
    for impl in ("baseline", "contrastseg"):
        ms, mib, _ = contrastive_loss._measure(impl, ("quadratic", 64), 1.0, "cpu", 1)
        assert ms > 0 and mib >= 0
        ms, _, _ = contrastive_loss._measure(impl, ("Cityscapes-like", 2, 128, 256, 19), 0.5, "cpu", 1)
        assert ms > 0


def test_train_step_benchmark_runs() -> None:
    seconds, _, size = train_step._measure("UPerNet-Swin-T", True, 0.125, 2, "cpu", 1, "bf16")  # PPM BN needs 2 images
    assert seconds > 0 and size == (64, 64)


def test_camvid_comparison_stops_the_other_runs_when_one_fails(tmp_path, monkeypatch) -> None:
    import subprocess
    import sys
    import time

    import pytest

    from benchmarks import camvid_comparison

    started = []
    real_popen = subprocess.Popen

    def popen(cmd, **kwargs):  # remember every process the comparison starts
        started.append(real_popen(cmd, **kwargs))
        return started[-1]

    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    failing = [sys.executable, "-c", "import time; time.sleep(1); raise SystemExit(3)"]
    monkeypatch.setattr(camvid_comparison, "_command", lambda arm, *a: failing if arm == "ce" else sleeper)
    monkeypatch.setattr(camvid_comparison.subprocess, "Popen", popen)
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match="ce seed 0 failed"):
        camvid_comparison.train([("ce", 0), ("ce_ms_cs", 0)], "unused", tmp_path, [], parallel=2, deadline_s=None)
    assert len(started) == 2 and all(p.poll() is not None for p in started)  # the sleeper did not outlive it
    assert time.perf_counter() - t0 < 60
