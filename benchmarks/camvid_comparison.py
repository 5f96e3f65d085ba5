"""CamVid: cross-entropy alone against CE + multi-scale + cross-scale contrast, several seeds, from scratch.

    python -m benchmarks.camvid_comparison --root ../shared/data/camvid --seeds 0 1 2     # GPU: the configs as is
    python -m benchmarks.camvid_comparison --root ../shared/data/camvid --seeds 0 1 --cpu-reduced   # 2-core CPU

Each run is ``contrastseg fit`` on ``experiments/camvid_{ce,contrastive}.yaml`` (identical but for the loss) with
``seed_everything`` and the data seed set to the seed, in its own process, then scored on CamVid val (101 images,
whole 360x480 frames) at the **final** epoch (no checkpoint picked on val). The table gives, per arm, mIoU mean
and standard deviation over seeds, the mean IoU of the rare classes (pole, sign/symbol, fence, pedestrian,
bicyclist), per-class IoU means and the wall time per run. ``--cpu-reduced`` trains on 176x240 crops for a few
epochs so that the comparison fits a CPU: the numbers then show the pipeline, not the paper's effect size.
Extra ``contrastseg fit`` arguments go after ``--``.
"""

from __future__ import annotations

import argparse
import json
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


def run_one(arm: str, seed: int, root: str, out: Path, extra: list[str]) -> dict:
    """Train one arm with one seed in a fresh process; return its final val scores and wall time."""
    name = f"{'ce' if arm == 'CE' else 'contrastive'}_seed{seed}"
    cmd = [sys.executable, "-m", "contrastseg", "fit", "--config", ARMS[arm], f"--seed_everything={seed}",
           f"--data.init_args.seed={seed}", f"--data.init_args.root={root}", "--trainer.enable_progress_bar=false",
           f"--trainer.logger.init_args.save_dir={out}", f"--trainer.logger.init_args.name={name}", *extra]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{arm} seed {seed} failed:\n{done.stderr[-4000:]}")
    scores = json.loads(max((out / name).rglob("val_metrics.json"), key=lambda p: p.stat().st_mtime).read_text())
    ious = {row["class"]: row["iou"] for row in scores["per_class"]}
    return {"arm": arm, "seed": seed, "mIoU": scores["mIoU"], "epoch": scores.get("epoch"), "iou": ious,
            "wall_s": wall}


def _mean_std(values: list[float]) -> str:
    return mean_std(values, digits=2)


def table(results: list[dict]) -> str:
    """Markdown: one row per arm (mIoU, rare-class mIoU, wall time), then per-class IoU means."""
    classes = list(results[0]["iou"])
    lines = ["| arm | seeds | mIoU (mean ± std) | rare-class mIoU | wall time per run |", "|---|---|---|---|---|"]
    for arm in ARMS:
        rows = [r for r in results if r["arm"] == arm]
        if not rows:
            continue
        rare = [statistics.mean(r["iou"][c] or 0.0 for c in RARE) for r in rows]
        wall = statistics.mean(r["wall_s"] for r in rows)
        lines.append(f"| {arm} | {', '.join(str(r['seed']) for r in rows)} | {_mean_std([r['mIoU'] for r in rows])} "
                     f"| {_mean_std(rare)} | {wall / 60:.1f} min |")
    lines += ["", "| class | " + " | ".join(a for a in ARMS if any(r["arm"] == a for r in results)) + " |",
              "|---|" + "---|" * sum(any(r["arm"] == a for r in results) for a in ARMS)]
    for c in classes:
        cells = [_mean_std([r["iou"][c] for r in results if r["arm"] == a]) for a in ARMS
                 if any(r["arm"] == a for r in results)]
        lines.append(f"| {c}{' (rare)' if c in RARE else ''} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(REPO.parent / "shared" / "data" / "camvid"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/camvid_comparison")
    parser.add_argument("--cpu-reduced", action="store_true", help="small crops and few epochs for a CPU")
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    out = (REPO / args.out).resolve()
    extra = (CPU_REDUCED if args.cpu_reduced else []) + extra
    results = []
    for seed in args.seeds:  # interleaved, so a cut-short sweep still compares both arms
        for arm in ARMS:
            results.append(run_one(arm, seed, args.root, out, extra))
            r = results[-1]
            print(f"{arm:>13} seed {seed}: mIoU {100 * r['mIoU']:.2f} in {r['wall_s'] / 60:.1f} min", flush=True)
            (out / "results.json").write_text(json.dumps(results, indent=2))
    print()
    print(table(results))


if __name__ == "__main__":
    main()
