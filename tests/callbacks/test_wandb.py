"""A W&B offline run: files written, resolved config logged, tables and overlays after validation, and the metric
files beside the run's checkpoints."""

import json
from pathlib import Path

import pytest
import yaml

from contrastseg.cli import main
from contrastseg.data.synthetic import SYNTHETIC_CLASSES

REPO = Path(__file__).resolve().parents[2]
ARGS = ["--config", str(REPO / "experiments/quickstart_contrastive.yaml"), "--config",
        str(REPO / "experiments/_wandb.yaml"), "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=1", "--data.init_args.num_workers=0", "--contrast.lambda_ms=0.3",
        "--trainer.log_every_n_steps=1"]


def test_offline_run_logs_config_metrics_and_media(tmp_path: Path, monkeypatch, capsys) -> None:
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(["fit", *ARGS, "--print_config"])
    resolved = yaml.safe_load(capsys.readouterr().out)
    try:
        cli = main(["fit", *ARGS])
        logged = dict(cli.trainer.logger.experiment.config)
        run_dir = Path(cli.trainer.logger.experiment.dir).parent
        run_id = cli.trainer.logger.version
        scores = cli.model.last_scores["val"]
    finally:
        wandb.finish()
    for key in ("model", "data", "trainer", "seed_everything"):
        assert logged[key] == resolved[key], key
    assert logged["model"]["losses"][1]["init_args"]["lambda_ms"] == 0.3
    assert list(run_dir.glob("*.wandb")), "the offline run file is written"
    history = next(run_dir.glob("*.wandb")).read_bytes()  # the offline run's records, keys stored as plain text
    for key in ("train/contrast_health/s4/anchors", "train/contrast_health/grad_cos"):
        assert key.encode() in history, f"{key} logged to W&B"
    media = list((run_dir / "files" / "media").rglob("*.png"))
    assert len(media) >= 4, "prediction overlays of the fixed validation images"
    tables = list((run_dir / "files" / "media").rglob("*.table.json"))
    assert tables, "the per-class IoU table"
    table = json.loads(tables[0].read_text())
    assert table["columns"] == ["class", "IoU", "acc", "pixels"]
    assert [row[0] for row in table["data"]] == list(SYNTHETIC_CLASSES)
    # One validation, one table, and it holds that validation's scores (not the sanity check's, nor a lagged one).
    assert len(tables) == 1
    final = [None if v != v else pytest.approx(v) for v in scores.iou.tolist()]
    assert [row[1] for row in table["data"]] == final
    # Checkpoints, config.yaml and the metric files share the run's own folder, not the save_dir all runs share.
    folder = tmp_path / "runs" / "contrastseg" / run_id
    assert (folder / "checkpoints" / "last.ckpt").is_file()
    for name in ("val_metrics.json", "val_metrics.csv", "config.yaml"):
        assert (folder / name).is_file(), name
        assert not (tmp_path / "runs" / name).exists(), name
