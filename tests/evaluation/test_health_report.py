"""The health report's tables from a hand-written metrics.csv."""

from __future__ import annotations

from pathlib import Path

from contrastseg.evaluation.health_report import gradient_table, main, read_health, scale_table

P = "train/contrast_health/"


def _csv(path: Path) -> Path:
    keys = ["step", "train/loss", f"{P}grad_norm/ce", f"{P}grad_norm/ms_s4", f"{P}grad_norm/contrast",
            f"{P}grad_ratio", f"{P}grad_cos", f"{P}s4/anchors", f"{P}s4/zero_share", f"{P}cs_4_32/zero_share"]
    rows = [["0", "", "2", "1", "1", "0.5", "-0.25", "", "", ""],
            ["0", "3.0", "", "", "", "", "", "", "", ""],
            ["9", "", "", "", "", "", "", "100", "0", "0.5"],
            ["19", "", "", "", "", "", "", "300", "0.5", "1"]]
    path.write_text("\n".join(",".join(r) for r in [keys, *rows]) + "\n")
    return path


def test_tables_by_hand(tmp_path: Path, capsys) -> None:
    rows = read_health(_csv(tmp_path / "metrics.csv"))
    assert len(rows) == 3 and rows[0]["grad_cos"] == -0.25
    grads = gradient_table(rows, steps_per_epoch=10)
    assert "| 0 | 0.0 | 2 | 1 | 1 | 0.50 | -0.250 |" in grads
    assert grads.splitlines()[0].startswith("| step | epoch | |g| ce | |g| ms_s4 | |g| contrast |")
    scales = scale_table(rows)
    assert "| s4 | 200 |" in scales and "| 0.25 |" in scales
    assert scales.splitlines()[-1].startswith("| cs_4_32 |") and "0.75" in scales.splitlines()[-1]
    assert main([str(tmp_path)]) == 0 and "|g| ce" in capsys.readouterr().out


def test_a_run_without_figures_says_so(tmp_path: Path, capsys) -> None:
    (tmp_path / "metrics.csv").write_text("step,train/loss\n0,1.0\n")
    assert main([str(tmp_path)]) == 1 and "no train/contrast_health/ figures" in capsys.readouterr().out
