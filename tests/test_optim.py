from functools import partial

import pytest
import torch

from contrastseg import ContrastSegModule
from contrastseg.models import Encoder, SegmentationModel, UPerNetHead
from contrastseg.optim import PolyLR


@pytest.mark.parametrize("step", [0, 1, 37, 99, 100, 150])
def test_poly_closed_form(step: int) -> None:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01)
    sched = PolyLR(opt, total_steps=100, power=0.9)
    for _ in range(step):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01 * (1 - min(step, 100) / 100) ** 0.9, abs=1e-12)


@pytest.mark.parametrize("step", [0, 1, 750, 1500, 1501, 80000, 160000])
def test_swin_warmup_then_linear(step: int) -> None:
    opt = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=6e-5)
    sched = PolyLR(opt, total_steps=160000, power=1.0, warmup_steps=1500, warmup_ratio=1e-6)
    factor = sched._factor(step)
    decay = 1 - step / 160000
    warm = 1e-6 + (1 - 1e-6) * step / 1500 if step < 1500 else 1.0
    assert factor == pytest.approx(decay * warm, rel=1e-9)


def test_no_weight_decay_groups_are_exact() -> None:
    net = SegmentationModel(4, encoder=Encoder("swin_tiny"), decoder=partial(UPerNetHead, channels=16))
    keys = ("norm", "absolute_pos_embed", "relative_position_bias_table")
    module = ContrastSegModule(net, num_classes=4, no_weight_decay=keys,
                               optimizer=lambda p: torch.optim.AdamW(p, lr=6e-5, weight_decay=0.01))
    module.trainer = None  # configure_optimizers needs no trainer without a PolyLR
    opt = module.configure_optimizers()
    decay, no_decay = opt.param_groups
    names = {id(p): n for n, p in module.named_parameters()}
    exempt = {names[id(p)] for p in no_decay["params"]}
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.01
    assert exempt == {n for n in names.values() if any(k in n for k in keys)}
    assert any("relative_position_bias_table" in n for n in exempt) and any("norm" in n for n in exempt)
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(module.parameters()))
