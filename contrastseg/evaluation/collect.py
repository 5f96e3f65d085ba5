"""``contrastseg collect``: finished runs -> the paper's ablation table (mean +- std over seeds per row).

    contrastseg collect runs/                      # every run folder below runs/ with val_metrics.json
    contrastseg collect runs/ --stage test --csv table.csv

A run is a folder holding the ``config.yaml`` LightningCLI saved and the ``<stage>_metrics.json`` the module
wrote at its last evaluation. Runs are grouped by their logger name (the ablation configs name each row; the
seeds of a row share it) and described in the paper's Table 1/7 columns, read from the resolved config:
model, backbone, whether ``L_c`` (one contrasted stage), ``L_cms`` (several) and ``L_ccs`` (cross-scale pairs) are
on, the number of scale pairs, the anchor sampling, then mIoU mean +- std over the group's seeds.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = ["collect_runs", "describe_run", "format_table", "main", "mean_std", "saved_logger_name"]

COLUMNS = ("row", "model", "backbone", "L_c", "L_cms", "L_ccs", "scale pairs", "sampling", "seeds", "mIoU")


def saved_logger_name(config: dict[str, Any]) -> str | None:
    """``trainer.logger.init_args.name`` of a resolved ``config.yaml`` (first logger of a list; ``None`` if unset).

    Args:
        config: the parsed YAML of a run's ``config.yaml``.

    Returns:
        The logger's run name, or ``None`` for ``logger: true/false``, no logger or no name.
    """
    logger = (config.get("trainer") or {}).get("logger")
    logger = logger[0] if isinstance(logger, list) and logger else logger
    if not isinstance(logger, dict):
        return None
    return (logger.get("init_args") or {}).get("name")


def describe_run(config: dict[str, Any]) -> dict[str, str]:
    """The paper's descriptive columns of one resolved ``config.yaml``.

    Args:
        config: the parsed ``config.yaml`` of a run.

    Returns:
        ``model``, ``backbone``, ``L_c``, ``L_cms``, ``L_ccs`` (``"x"`` when used), ``scale pairs``, ``sampling``.
    """
    net = config.get("model", {}).get("net", {}).get("init_args", {})
    encoder = net.get("encoder", {})
    encoder = encoder.get("init_args", encoder)  # saved as {class_path, init_args} or as plain options
    decoder = str(net.get("decoder", {}).get("class_path", "?")).rsplit(".", 1)[-1]
    terms = config.get("model", {}).get("losses") or []
    contrast = next((t.get("init_args") or {} for t in terms if str(t.get("class_path", "")).endswith(
        "MultiScaleContrast")), None)
    row = {"model": decoder.replace("Head", ""), "backbone": str(encoder.get("name", "?")),
           "L_c": "", "L_cms": "", "L_ccs": "", "scale pairs": "-", "sampling": "-"}
    if contrast is not None:
        stages = contrast.get("stages")
        n_stages = 4 if stages is None else len(stages)  # None: every encoder stage (4 in every built-in encoder)
        pairs = contrast.get("cross_scale_pairs")
        # None: MultiScaleContrast.bind's default, (0, 3) and (0, 2) on 4 stages, (0, last) on 2 or 3, none on 1.
        n_pairs = (2 if n_stages == 4 else int(n_stages > 1)) if pairs is None else len(pairs)
        n_pairs *= float(contrast.get("lambda_cs", 0.1)) != 0  # a term with weight 0 is off
        on = float(contrast.get("lambda_ms", 0.1)) != 0
        row |= {"L_c": "x" if on and n_stages == 1 else "", "L_cms": "x" if on and n_stages > 1 else "",
                "L_ccs": "x" if n_pairs else "", "scale pairs": str(n_pairs) if n_pairs else "-",
                "sampling": str(contrast.get("sampling", "balanced"))}
    return row


def collect_runs(roots: Sequence[str | Path], *, stage: str = "val") -> list[dict[str, Any]]:
    """One entry per row name: the descriptive columns, the seeds and the mIoU of each finished run.

    Args:
        roots: folders searched recursively for ``<stage>_metrics.json`` with a ``config.yaml`` beside it.
        stage: ``"val"`` or ``"test"``.

    Returns:
        Per logger run name: the :func:`describe_run` columns, ``row`` and ``runs`` (seed, mIoU, path each). A seed
        counts once per row: of several folders with the same name and seed (a ``validate`` or ``test`` of a run
        writes a folder of its own), the newest metrics file is kept, and a note on stderr says which.
    """
    groups: dict[str, dict[str, Any]] = {}
    found = [m for root in roots for m in Path(root).rglob(f"{stage}_metrics.json")
             if (m.parent / "config.yaml").is_file()]
    for metrics in sorted(found, key=lambda m: m.stat().st_mtime_ns):  # oldest first: a newer run replaces it
        config = yaml.safe_load((metrics.parent / "config.yaml").read_text())
        name = saved_logger_name(config) or metrics.parent.parent.name
        if name not in groups:
            groups[name] = {"row": name, **describe_run(config), "runs": {}}
        runs = groups[name]["runs"]  # seed -> run: one seed counts once (a `validate` writes a folder of its own)
        seed = config.get("seed_everything")
        run = {"seed": seed, "mIoU": json.loads(metrics.read_text()).get("mIoU"), "path": str(metrics.parent)}
        if seed in runs:
            print(f"contrastseg collect: {name}, seed {seed}: {run['path']} replaces the older {runs[seed]['path']}",
                  file=sys.stderr)
        runs[seed] = run
    for entry in groups.values():
        entry["runs"] = sorted(entry["runs"].values(), key=lambda r: (r["seed"] is None, str(r["seed"])))
    return list(groups.values())


def mean_std(values: Sequence[float | None], digits: int = 1) -> str:
    """Scores in [0, 1] as ``"mean ± std"`` in percent (sample std); one value alone; ``"-"`` for none.

    Args:
        values: scores in [0, 1]; ``None`` entries are skipped.
        digits: decimals shown.

    Returns:
        For example ``mean_std([0.5, 0.7]) == "60.0 ± 14.1"``.
    """
    kept = [100 * v for v in values if v is not None]
    if not kept:
        return "-"
    if len(kept) == 1:
        return f"{kept[0]:.{digits}f}"
    return f"{statistics.mean(kept):.{digits}f} ± {statistics.stdev(kept):.{digits}f}"


def format_table(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Rows of strings in :data:`COLUMNS` order.

    Args:
        rows: the entries of :func:`collect_runs`.

    Returns:
        One dict of strings per row, its ``mIoU`` as :func:`mean_std` over the row's runs.
    """
    out = []
    for row in rows:
        seeds = ", ".join(str(r["seed"]) for r in row["runs"])
        out.append({**{c: row.get(c, "") for c in COLUMNS[:-2]}, "seeds": seeds,
                    "mIoU": mean_std([r["mIoU"] for r in row["runs"]])})
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``contrastseg collect ROOT... [--stage val|test] [--csv FILE]``; prints a Markdown table."""
    parser = argparse.ArgumentParser(prog="contrastseg collect", description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="+", help="folders searched for finished runs")
    parser.add_argument("--stage", default="val", choices=("val", "test"))
    parser.add_argument("--csv", default=None, help="also write the table as CSV")
    args = parser.parse_args(argv)
    missing = [r for r in args.roots if not Path(r).is_dir()]
    if missing:
        print(f"contrastseg: error: no such folder: {missing[0]}", file=sys.stderr)
        return 2
    table = format_table(collect_runs(args.roots, stage=args.stage))
    if not table:
        print(f"contrastseg: error: no finished run ({args.stage}_metrics.json beside config.yaml) under "
              f"{', '.join(args.roots)}", file=sys.stderr)
        return 2
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for row in table:
        print("| " + " | ".join(row[c] for c in COLUMNS) + " |")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(COLUMNS))
            writer.writeheader()
            writer.writerows(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
