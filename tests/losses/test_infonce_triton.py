"""The fused Triton InfoNCE (the CUDA path) against Eq. 1-2, run on the CPU by Triton's interpreter.

The kernels' logic (tiling, padding, online log-sum-exp, masks, both backward kernels) is checked here on every
machine; ``tests/test_cuda.py`` checks the compiled kernels and their tf32x3 products on a GPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from contrastseg.losses import MultiScaleContrastiveLoss, supervised_infonce
from contrastseg.losses.infonce import resolve_backend

REPO = Path(__file__).resolve().parents[2]


def test_triton_kernels_match_equations_under_the_interpreter() -> None:
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-m", "tests.losses.triton_worker"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "triton interpreter checks passed" in result.stdout


def test_backend_choice_and_errors() -> None:
    assert resolve_backend("auto", torch.device("cpu")) == "torch"  # no interpreter in this process
    assert resolve_backend("torch", torch.device("cpu")) == "torch"
    with pytest.raises(RuntimeError, match="backend='triton' needs CUDA"):
        supervised_infonce(torch.randn(4, 3), torch.tensor([0, 0, 1, 1]), backend="triton")
    with pytest.raises(ValueError, match="backend must be"):
        supervised_infonce(torch.randn(4, 3), torch.tensor([0, 0, 1, 1]), backend="cuda")
    with pytest.raises(ValueError, match="backend must be"):
        MultiScaleContrastiveLoss(backend="fused")


def test_tile_shapes_that_do_not_fit_fall_back_to_smaller_ones(monkeypatch) -> None:
    triton = pytest.importorskip("triton")
    from triton.runtime.errors import OutOfResources

    from contrastseg.losses import infonce_triton

    launched = []

    class FakeKernel:  # shared memory for BLOCK_M * BLOCK_D above a device's limit fails at load, before running
        def __getitem__(self, grid):
            def run(*args, **cfg):
                if cfg["BLOCK_M"] * cfg["BLOCK_D"] > 32 * 256:
                    raise OutOfResources(394496, 232448, "shared memory")
                launched.append((grid, cfg["BLOCK_M"], cfg["num_stages"]))
            return run

    monkeypatch.setattr(infonce_triton, "_INTERPRET", False)
    monkeypatch.setattr(infonce_triton, "_CHOSEN", {})
    grid = lambda cfg: (triton.cdiv(100, cfg["BLOCK_M"]),)  # noqa: E731
    infonce_triton._launch("fake", FakeKernel(), grid, 256, exclude_self=True)
    assert launched == [((4,), 32, 2)]  # (64, 32) did not fit; (32, 32) with two stages did
    infonce_triton._launch("fake", FakeKernel(), grid, 256, exclude_self=True)
    assert launched[-1] == ((4,), 32, 2) and len(launched) == 2  # remembered: no second failed try
    with pytest.raises(OutOfResources):
        infonce_triton._launch("fake", FakeKernel(), grid, 4096, exclude_self=True)  # nothing fits


def test_auto_runs_small_terms_on_triton_and_large_ones_on_torch(monkeypatch) -> None:
    from contrastseg.losses import infonce, infonce_triton

    calls = []
    monkeypatch.setattr(infonce_triton, "available", lambda device: True)  # as on a CUDA machine
    monkeypatch.setattr(infonce_triton, "triton_infonce", lambda *a, **k: calls.append(len(a[0])) or a[0].sum() * 0)
    monkeypatch.setattr(infonce, "TRITON_MAX_SIMILARITIES", 100)
    labels = torch.arange(20) % 3
    supervised_infonce(torch.randn(10, 4), labels[:10])  # 100 similarities: Triton
    supervised_infonce(torch.randn(20, 4), labels)  # 400: PyTorch
    supervised_infonce(torch.randn(20, 4), labels, backend="triton")  # asked for: Triton at any size
    assert calls == [10, 20]


def test_kernels_that_fail_their_check_leave_the_loss_on_pytorch(monkeypatch) -> None:
    triton = pytest.importorskip("triton")
    from contrastseg.losses import infonce_triton

    def broken(*args, **kwargs):
        raise triton.CompilationError("kernel.py", None, "unsupported")  # as a Triton that cannot build them

    monkeypatch.setattr(infonce_triton, "triton_infonce", broken)
    with pytest.warns(RuntimeWarning, match="failed their check.*uses the PyTorch path"):
        assert infonce_triton._self_test(torch.device("cpu")) is False
    monkeypatch.setattr(infonce_triton, "triton_infonce", lambda z, y, *a, **k: z.sum() * 0)  # a wrong result
    with pytest.warns(RuntimeWarning, match="failed their check"):
        assert infonce_triton._self_test(torch.device("cpu")) is False
