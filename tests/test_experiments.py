"""Every experiment config builds its real decoder and runs one training step on tiny synthetic data."""

from pathlib import Path

import pytest

from contrastseg.cli import main
from contrastseg.cli_config import read_config

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p for folder in ("", "ablations", "study") for p in (REPO / "experiments" / folder).glob("*.yaml")
                     if not p.name.startswith("_"))
TINY = {"hrnet_w48": "hrnet_w18_small", "resnet101d": "resnet18", "resnet101": "resnet18", "resnet50": "resnet18",
        "swin_small": "swin_tiny", "swin_base": "swin_tiny", "swin_large": "swin_tiny"}


def _resolved(config: Path) -> dict:
    return read_config([config])


# UPerNet configs take several seconds a step even with a tiny encoder: two of them (Swin, ResNet) run by default,
# the others with the slow tests.
FAST_UPERNET = ("ade20k_upernet_swin_t", "cityscapes_upernet_r101_contrast")


# The study's variants of the quickstart differ from it in one option each: one runs by default, the rest when slow.
FAST_STUDY = ("lambda_0.01",)

# Table 2's configs run with the slow tests (the terms themselves train in ContrastSegModule in tests/losses).
FAST_T2 = ()


def _param(config: Path):
    slow = ("upernet" in config.stem and config.stem not in FAST_UPERNET
            or config.parent.name == "study" and config.stem not in FAST_STUDY
            or "t2_" in config.stem and config.stem not in FAST_T2)
    return pytest.param(config, marks=pytest.mark.slow) if slow else config


@pytest.mark.parametrize("config", [_param(p) for p in EXPERIMENTS],
                         ids=lambda p: str(p.relative_to(REPO / "experiments").with_suffix("")))
def test_config_runs_one_step_with_a_tiny_encoder(config: Path, tmp_path: Path) -> None:
    encoder = _resolved(config)["model"]["net"]["init_args"]["encoder"]["name"]
    args = [
        "fit", "--config", str(config),
        f"--model.net.init_args.encoder.name={TINY.get(encoder, encoder)}",
        "--model.net.init_args.encoder.pretrained=false",
        "--data=contrastseg.data.SyntheticDataModule", "--data.image_size=[96, 128]", "--data.num_train=4",
        "--data.num_val=2", "--data.batch_size=2", "--data.num_workers=0",
        "--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.strategy=auto",
        "--trainer.sync_batchnorm=false", "--trainer.fast_dev_run=1", f"--trainer.default_root_dir={tmp_path}",
    ]
    cli = main(args)
    net = cli.model.net
    resolved = _resolved(config)["model"]
    assert type(net.decoder).__name__ == resolved["net"]["init_args"]["decoder"]["class_path"].rsplit(".", 1)[1]
    logged = cli.trainer.callback_metrics
    first_term = resolved["losses"][0] if resolved.get("losses") else {"init_args": {}}
    name = (first_term.get("init_args") or {}).get("name") or {"LovaszSoftmax": "lovasz", "OhemCrossEntropy": "ohem"}.get(
        first_term.get("class_path", "").rsplit(".", 1)[-1], "ce")
    assert f"train/loss_{name}" in logged and "val/mIoU" in logged
    contrast = [t for t in resolved["losses"] if t["class_path"].endswith("MultiScaleContrast")]
    if contrast:
        assert "train/loss_ms" in logged and "train/loss_cs" in logged
        # On 96x128 images the stride-32 map (3x4) may hold no class with 5 pixels: a single-stage L_c is then 0.
        single_coarse = (contrast[0].get("init_args") or {}).get("stages") == [3]
        assert float(logged["train/loss_ms"]) >= 0 if single_coarse else float(logged["train/loss_ms"]) > 0
    for term in cli.model.losses:
        if type(term).__name__ in ("PixelContrast", "RegionContrast"):
            assert f"train/loss_{term.name}" in logged
            memory = term.pixel_memory if type(term).__name__ == "PixelContrast" else term.memory
            assert int(memory.count.sum()) > 0  # the step's rows went into the memory after its backward pass
