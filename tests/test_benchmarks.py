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
