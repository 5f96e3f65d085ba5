"""The fused Triton InfoNCE (the CUDA path) against Eq. 1-2, run on the CPU by Triton's interpreter.

The kernels' logic (tiling, padding, online log-sum-exp, masks, both backward kernels) is checked here on every
machine; ``tests/test_cuda.py`` checks the compiled kernels and their tf32x3 products on a GPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from contrastseg.losses import MultiScaleContrastiveLoss, supervised_infonce
from contrastseg.losses.infonce import resolve_backend

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
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
    assert launched == [((4,), 32, 1)]  # both (64, 32) shapes did not fit; (32, 32) did
    infonce_triton._launch("fake", FakeKernel(), grid, 256, exclude_self=True)
    assert launched[-1] == ((4,), 32, 1) and len(launched) == 2  # remembered: no second failed try
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


# Shared memory per block that Triton allows (bytes): the H100's limit is the one its launch error reported.
_SHARED_LIMIT = {80: 166912, 90: 232448}
_POINTERS = {"Q", "K", "STATS", "PART", "GRAD", "DQ", "DK"}


def _compile(kernel, consts: dict, options: dict, arch: int):
    """Ahead-of-time compilation for an NVIDIA GPU (no GPU needed: Triton ships ptxas)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = {}
    for name in kernel.arg_names:
        signature[name] = ("constexpr" if name in consts else "*i64" if name in ("YQ", "YK") else
                           "*i32" if name == "RANGE" else
                           "*fp32" if name in _POINTERS else "fp32" if name == "inv_t" else "i32")
    return triton.compile(ASTSource(kernel, signature, consts), target=GPUTarget("cuda", arch, 32), options=options)


def _spill_bytes(compiled) -> int:
    import re

    import triton

    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
        f.write(compiled.asm["ptx"])
        f.flush()
        out = subprocess.run([str(ptxas), "-v", "--gpu-name=sm_90a", f.name, "-o", os.devnull],
                             capture_output=True, text=True, check=True)
    found = re.search(r"(\d+) bytes spill stores", out.stdout + out.stderr)
    assert found, out.stdout + out.stderr
    return int(found.group(1))


@pytest.mark.parametrize("arch", [80, 90])
def test_kernels_compile_for_ampere_and_hopper_within_shared_memory(arch: int) -> None:
    """Every kernel builds for sm_80 / sm_90 with a tile shape that fits the device's shared memory; on sm_90 the
    first shape fits (no fallback) and spills no registers (ptxas -v)."""
    pytest.importorskip("triton")
    from contrastseg.losses import infonce_kernels, infonce_triton

    if not (Path(infonce_triton.triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas").exists():
        pytest.skip("this Triton has no bundled ptxas")
    kernels = {"forward": (infonce_kernels._forward_kernel, {"WITH_GRAD": False}),
               "forward_grad": (infonce_kernels._forward_kernel, {"WITH_GRAD": True}),
               "lse_split": (infonce_kernels._lse_split_kernel, {}),
               "loss_split": (infonce_kernels._loss_split_kernel, {}),
               "grad_rows": (infonce_kernels._grad_rows_kernel, {}),
               "grad_cols": (infonce_kernels._grad_cols_kernel, {})}
    for d in (256, 128, 64):
        for name, (kernel, meta) in kernels.items():
            configs = infonce_triton._configs(d, name)
            for i, cfg in enumerate(configs):  # noqa: B007 - i is read after the loop
                consts = {"EXCLUDE_SELF": True, "PRECISION": infonce_triton.PRECISION, **meta,
                          **{k: v for k, v in cfg.items() if k.startswith("BLOCK")}}
                compiled = _compile(kernel, consts, {"num_warps": cfg["num_warps"], "num_stages": cfg["num_stages"]},
                                    arch)
                if compiled.metadata.shared <= _SHARED_LIMIT[arch]:
                    break
            else:
                pytest.fail(f"{name} (d={d}): no tile shape fits sm_{arch}'s shared memory")
            if arch == 90:
                assert i == 0, f"{name} (d={d}): the first tile shape needs {compiled.metadata.shared} B on sm_90"
                assert _spill_bytes(compiled) == 0, f"{name} (d={d}): register spills with {cfg}"
    finalize = _compile(infonce_kernels._finalize_kernel, {"BLOCK": 256}, {"num_warps": 4}, arch)
    assert finalize.metadata.shared <= _SHARED_LIMIT[arch]
