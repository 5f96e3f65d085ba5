from functools import partial
from types import SimpleNamespace

import pytest
import torch

from contrastseg import ContrastSegModule
from contrastseg.errors import ConfigError
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


def _module(interval: str = "step") -> ContrastSegModule:
    net = SegmentationModel(4, encoder=Encoder("resnet18"))
    return ContrastSegModule(net, num_classes=4, lr_scheduler=lambda o: PolyLR(o, power=0.9),
                             scheduler_interval=interval)


def test_filled_in_length_counts_epochs_when_stepped_per_epoch() -> None:
    module = _module("epoch")
    module.trainer = SimpleNamespace(max_epochs=100, estimated_stepping_batches=4600)
    assert module.configure_optimizers()["lr_scheduler"]["scheduler"].total_steps == 100
    module.trainer = SimpleNamespace(max_epochs=-1, estimated_stepping_batches=4600)
    with pytest.raises(ConfigError, match="trainer.max_epochs"):
        module.configure_optimizers()


def test_a_resumed_run_keeps_its_own_schedule_length() -> None:
    """Resuming with a larger max_steps decays over the new length (the checkpoint's would hold the LR at 0)."""
    module = _module()
    module.trainer = SimpleNamespace(estimated_stepping_batches=10)
    old = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    for _ in range(10):
        old.optimizer.step()
        old.step()
    module.trainer = SimpleNamespace(estimated_stepping_batches=20)
    new = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    with pytest.warns(UserWarning, match="ends at step 10, this run's at 20"):
        new.load_state_dict(old.state_dict())
    assert new.total_steps == 20 and new.last_epoch == 10
    new.optimizer.step()
    new.step()
    assert new.optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * (1 - 11 / 20) ** 0.9)
    # A length set in the config is this run's config too.
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01)
    fixed = PolyLR(opt, total_steps=30)
    with pytest.warns(UserWarning, match="ends at step 40, this run's at 30"):
        fixed.load_state_dict(PolyLR(opt, total_steps=40).state_dict())
    assert fixed.total_steps == 30
