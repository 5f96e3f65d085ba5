"""The contrastive health monitor's figures of one run, as Markdown tables (from its ``metrics.csv``).

    python -m contrastseg.evaluation.health_report runs/quickstart_contrastive/version_0 [--every 2]

Two tables: the gradient measurements over training (the gradient norm each term sends into the encoder, the
contrastive sum over the rest, and the cosine between them), and per scale and cross-scale pair the means over
training of what the sampler drew, the structural-zero share, alignment and uniformity.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import statistics
from collections.abc import Sequence
from pathlib import Path

__all__ = ["gradient_table", "main", "read_health", "scale_table"]

PREFIX = "train/contrast_health/"


def read_health(metrics_csv: Path) -> list[dict[str, float]]:
    """Rows of ``metrics_csv`` holding monitor figures: ``step``, ``epoch`` (when the row has it) and the figures
    without their prefix."""
    rows = []
    with Path(metrics_csv).open() as f:
        for row in csv.DictReader(f):
            figures = {k.removeprefix(PREFIX): float(v) for k, v in row.items() if k.startswith(PREFIX) and v}
            if figures:
                rows.append({"step": float(row["step"]), **figures})
    return rows


def gradient_table(rows: list[dict[str, float]], *, every: int = 1, steps_per_epoch: int | None = None) -> str:
    """One line per gradient measurement (every ``every``-th): norms of every term, ratio and cosine."""
    measured = [r for r in rows if "grad_cos" in r or "grad_ratio" in r][::every]
    if not measured:
        return "(no gradient measurement in this run)"
    terms = [k.removeprefix("grad_norm/") for k in measured[0] if k.startswith("grad_norm/")]
    terms = sorted(terms, key=lambda t: (t == "contrast", t.startswith(("ms_", "cs_")), t.startswith("cs_"),
                                         _natural(t)))
    lines = ["| step | " + ("epoch | " if steps_per_epoch else "") + " | ".join(f"|g| {t}" for t in terms)
             + " | contrast / rest | cos(rest, contrast) |",
             "|---:|" + ("---:|" if steps_per_epoch else "") + "---:|" * (len(terms) + 2)]
    for r in measured:
        epoch = f"{r['step'] / steps_per_epoch:.1f} | " if steps_per_epoch else ""
        norms = " | ".join(f"{r.get(f'grad_norm/{t}', math.nan):.3g}" for t in terms)
        lines.append(f"| {int(r['step'])} | {epoch}{norms} | {r.get('grad_ratio', math.nan):.2f} | "
                     f"{r.get('grad_cos', math.nan):+.3f} |")
    return "\n".join(lines)


def scale_table(rows: list[dict[str, float]]) -> str:
    """Per scale and pair, the mean over the logged steps of every figure the monitor logs for it."""
    stats = ("anchors", "pairs", "sampled_pairs", "views", "classes_with_positives", "median_pair_pixels",
             "zero_share", "alignment", "uniformity", "shared_classes")
    tags = sorted({k.split("/")[0] for r in rows for k in r if "/" in k and not k.startswith("grad_")},
                  key=lambda t: (t.startswith("cs_"), _natural(t)))
    lines = ["| scale | " + " | ".join(s.replace("_", " ") for s in stats) + " |", "|---|" + "---:|" * len(stats)]
    for tag in tags:
        cells = []
        for stat in stats:
            values = [r[f"{tag}/{stat}"] for r in rows if f"{tag}/{stat}" in r]
            cells.append(f"{statistics.mean(values):.3g}" if values else "")
        lines.append(f"| {tag} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _natural(name: str) -> list[int | str]:
    """``ms_s4`` before ``ms_s16``: digits compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run's version folder (or its metrics.csv)")
    parser.add_argument("--every", type=int, default=1, help="print every n-th gradient measurement")
    parser.add_argument("--steps-per-epoch", type=int, default=None, help="adds an epoch column")
    args = parser.parse_args(argv)
    path = Path(args.run)
    rows = read_health(path if path.suffix == ".csv" else path / "metrics.csv")
    if not rows:
        print(f"{path}: no train/contrast_health/ figures (a run without a contrastive term or monitor)")
        return 1
    print(gradient_table(rows, every=args.every, steps_per_epoch=args.steps_per_epoch))
    print()
    print(scale_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
