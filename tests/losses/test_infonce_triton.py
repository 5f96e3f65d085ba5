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
