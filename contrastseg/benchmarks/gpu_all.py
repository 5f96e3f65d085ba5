"""Every measurement that needs a GPU, in one time-boxed go (about 9 minutes on one H100).

    python -m contrastseg.benchmarks.gpu_all OUTDIR       # from the repository root (the tests and configs)

The parts, in this order (``PARTS``: a space-separated subset of their names; default all but ``table2``):

- ``loss``: :mod:`~contrastseg.benchmarks.contrastive_loss` at the paper's full shapes, with a kernel profile of
  our loss; ``losssplit``: the same, our loss only, with the Triton kernels split;
- ``kernels``: :mod:`~contrastseg.benchmarks.infonce_kernels`, the fused Triton terms against the PyTorch ones;
- ``table2``: :mod:`~contrastseg.benchmarks.table2_losses`, the Table 2 competitor terms against their released
  code at the paper's shapes;
- ``step``, ``stepamp``: :mod:`~contrastseg.benchmarks.train_step` at the paper's crops, float32 and bf16 autocast;
- ``tests``: ``tests/test_cuda.py`` (CUDA autocast, sampler syncs, memory target, mixed-precision fits), in the
  background of ``camvid`` when both run;
- ``camvid``: :mod:`~contrastseg.benchmarks.camvid_comparison` (``contrastseg compare``): 3 seeds x 2 arms trained
  at once, stopped at the time left, scored at the last epoch every run validated and at equal training time per
  seed; its runs' reports and metrics are packed into ``OUTDIR/camvid_runs.tar.gz``.

Every part gets at most its own limit and never more than what is left of ``BUDGET_S`` (540 s); a part with under
20 s left is skipped (and says so), so the whole run ends within the budget. Each part's output is printed and
written to ``OUTDIR`` (``env.txt`` first: the GPU, the cores and the library versions). Environment:
``CONTRASTSEG_CAMVID`` (CamVid's root, default ``data/camvid``), ``TESTS_TIMEOUT``, and extra arguments per part to
shrink it: ``LOSS_ARGS``, ``LOSS_SPLIT_ARGS``, ``KERNEL_ARGS`` (default ``--split``), ``TABLE2_ARGS``,
``STEP_ARGS``, ``STEP_AMP_ARGS`` (default ``--families HRNetV2-W48 UPerNet-Swin-T``), ``PYTEST_ARGS``,
``CAMVID_ARGS``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path

ALL_PARTS = ("loss", "losssplit", "kernels", "table2", "step", "stepamp", "tests", "camvid")
DEFAULT_PARTS = tuple(p for p in ALL_PARTS if p != "table2")
MODULE = "contrastseg.benchmarks."
MIN_PART_S = 20  # a part with less than this left of the budget is skipped
CAMVID_MIN_S = 100  # the CamVid comparison is skipped with less than this left
CAMVID_FLUSH_S = 70  # its runs stop this long before the budget ends, to flush their logs and be scored


class Budget:
    """Seconds left of a total, and the limit a part gets from it."""

    def __init__(self, total_s: float) -> None:
        self.total_s, self.t0 = total_s, time.monotonic()

    def elapsed(self) -> int:
        return int(time.monotonic() - self.t0)

    def left(self) -> int:
        return int(self.total_s - (time.monotonic() - self.t0))

    def limit(self, max_s: float) -> int:
        return int(min(max_s, self.left()))


def part_commands(env: Mapping[str, str]) -> list[tuple[str, str, int, list[str], str]]:
    """``(part, title, limit s, module and arguments, output file)`` of every part but ``tests`` and ``camvid``."""
    def args(name: str, default: str = "") -> list[str]:
        return (env.get(name) or default).split()  # an empty variable takes the default, as in a shell

    return [
        ("loss", "contrastive loss", 150, ["contrastive_loss", "--profile", *args("LOSS_ARGS")],
         "contrastive_loss.txt"),
        ("losssplit", "contrastive loss, Triton kernels split", 150,
         ["contrastive_loss", "--triton-split", "--no-baseline", "--anchors", *args("LOSS_SPLIT_ARGS")],
         "contrastive_loss_split.txt"),
        ("kernels", "InfoNCE kernels", 90, ["infonce_kernels", *args("KERNEL_ARGS", "--split")], "infonce_kernels.txt"),
        ("table2", "Table 2 terms", 150, ["table2_losses", *args("TABLE2_ARGS")], "table2_losses.txt"),
        ("step", "train step", 170, ["train_step", *args("STEP_ARGS")], "train_step.txt"),
        ("stepamp", "train step, bf16", 60,
         ["train_step", "--amp", "bf16", *args("STEP_AMP_ARGS", "--families HRNetV2-W48 UPerNet-Swin-T"),
          *args("STEP_ARGS")], "train_step.txt"),
    ]


def _tee(command: list[str], log: Path, *, env: Mapping[str, str], timeout_s: int | None, append: bool = False,
         show_last: int | None = None) -> None:
    """Run ``command``, its output to ``log`` and printed (only its last ``show_last`` lines, at the end, if
    given); stopped after ``timeout_s`` seconds."""
    with open(log, "a" if append else "w") as file:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                env=dict(env))
        timer = threading.Timer(timeout_s, proc.terminate) if timeout_s is not None else None
        if timer is not None:
            timer.start()
        last: deque[str] = deque(maxlen=show_last)
        assert proc.stdout is not None
        for line in proc.stdout:
            file.write(line)
            if show_last is None:
                print(line, end="", flush=True)
            else:
                last.append(line)
        proc.wait()
        if timer is not None:
            timer.cancel()
        print("".join(last), end="", flush=True)


def _environment(python: str, log: Path, env: Mapping[str, str]) -> None:
    """The GPU, the cores and the library versions, printed and written to ``log``."""
    versions = ("import torch, timm, lightning, torchmetrics, segmentation_models_pytorch as smp, albumentations as A"
                "\nprint('torch', torch.__version__, 'cuda', torch.version.cuda, 'timm', timm.__version__, 'lightning',"
                " lightning.__version__, 'torchmetrics', torchmetrics.__version__, 'smp', smp.__version__,"
                " 'albumentations', A.__version__)\n"
                "try:\n    import triton; print('triton', triton.__version__)\n"
                "except ImportError:\n    print('triton: not installed')")
    query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv"]
    lines = []
    for command in (query, [python, "-c", versions]):
        try:
            done = subprocess.run(command, capture_output=True, text=True, env=dict(env))
            lines.append((done.stdout + done.stderr).rstrip("\n"))
        except FileNotFoundError as err:
            lines.append(str(err))
        if command is query:
            lines.append(str(os.cpu_count()))
    text = "\n".join(lines) + "\n"
    print(text, end="", flush=True)
    log.write_text(text)


def _pack_camvid_runs(folder: Path, archive: Path) -> None:
    """The comparison's reports, logs, metrics and configs (not its checkpoints) in one archive."""
    files = [p for pattern in ("*.json", "*.md", "*.log") for p in sorted(folder.glob(pattern))]
    files += sorted(p for name in ("metrics.csv", "config.yaml") for p in folder.rglob(name))
    with tarfile.open(archive, "w:gz") as tar:
        for path in files:
            tar.add(path)


def main(argv: list[str] | None = None, *, python: str = sys.executable,
         env: Mapping[str, str] | None = None) -> int:
    """Run the parts ``PARTS`` asks for within ``BUDGET_S``; ``python`` runs each part (a test passes a stand-in)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for each part's output")
    out = parser.parse_args(argv).out
    env = dict(os.environ if env is None else env)
    out.mkdir(parents=True, exist_ok=True)
    budget = Budget(float(env.get("BUDGET_S") or 540))
    parts = set((env.get("PARTS") or " ".join(DEFAULT_PARTS)).split())
    if unknown := parts - set(ALL_PARTS):
        raise SystemExit(f"PARTS: unknown {sorted(unknown)}; choose from {' '.join(ALL_PARTS)}")
    child_env = {**env, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    _environment(python, out / "env.txt", child_env)

    def run_part(title: str, max_s: int, command: list[str], log: Path, **tee: int | bool) -> None:
        if budget.left() < MIN_PART_S:
            print(f"== {title}: skipped, BUDGET_S={budget.total_s:g} spent", flush=True)
            return
        print(f"== {title} ({budget.elapsed()} s)", flush=True)
        _tee(command, log, env=child_env, timeout_s=budget.limit(max_s), **tee)

    written: set[str] = set()
    for part, title, max_s, command, log in part_commands(env):
        if part in parts:
            run_part(title, max_s, [python, "-m", MODULE + command[0], *command[1:]], out / log,
                     append=log in written)
            written.add(log)
    pytest = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cuda.py",
              *(env.get("PYTEST_ARGS") or "").split()]
    tests_timeout = env.get("TESTS_TIMEOUT")
    if "camvid" not in parts:
        if "tests" in parts:
            run_part("CUDA tests", int(tests_timeout or 240), pytest, out / "test_cuda.txt", show_last=30)
        print(f"== done in {budget.elapsed()} s")
        return 0
    if budget.left() < CAMVID_MIN_S:
        print(f"== CamVid comparison: skipped, BUDGET_S={budget.total_s:g} spent")
        return 0
    tests = None
    if "tests" in parts:
        print(f"== CUDA tests in the background ({budget.elapsed()} s)", flush=True)
        tests = threading.Thread(target=_tee, args=(pytest, out / "test_cuda.txt"),
                                 kwargs={"env": child_env, "timeout_s": budget.limit(int(tests_timeout or 300)),
                                         "show_last": 0})
        tests.start()
    print(f"== CamVid comparison ({budget.elapsed()} s)", flush=True)
    deadline_s = budget.left() - CAMVID_FLUSH_S
    camvid_out = Path("runs/camvid_gpu", time.strftime("%Y%m%d-%H%M%S"))  # compare refuses a used folder
    _tee([python, "-m", MODULE + "camvid_comparison", "--root", env.get("CONTRASTSEG_CAMVID") or "data/camvid",
          "--seeds", "0", "1", "2", "--parallel", "6", "--out", str(camvid_out),
          "--deadline-min", str(max(deadline_s, 30) / 60), "--", "--trainer.check_val_every_n_epoch=5",
          "--data.init_args.num_workers=2", *(env.get("CAMVID_ARGS") or "").split()], out / "camvid.txt",
         env=child_env, timeout_s=None)
    if tests is not None:
        tests.join()
        print("".join((out / "test_cuda.txt").read_text().splitlines(keepends=True)[-5:]), end="")
    if camvid_out.is_dir():
        _pack_camvid_runs(camvid_out, out / "camvid_runs.tar.gz")
    print(f"== done in {budget.elapsed()} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
