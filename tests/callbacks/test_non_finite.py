"""NonFiniteLossGuard: a NaN loss raises or skips the batch, with the BatchNorm statistics as before it."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
from lightning import Trainer

from contrastseg import ContrastSegModule, NonFiniteLossError
from contrastseg.callbacks import NonFiniteLossGuard
from contrastseg.data import SyntheticDataModule
from contrastseg.losses import CrossEntropy, PixelContrast
from contrastseg.losses.memory import ClassMemory
from contrastseg.models import Encoder, HRNetV2Head, SegmentationModel
from tests.fault_helpers import NaNAt


def _module(*terms, **kwargs) -> ContrastSegModule:
    net = SegmentationModel(8, encoder=Encoder("resnet18"), decoder=partial(HRNetV2Head, channels=16))
    return ContrastSegModule(net, num_classes=8, losses=[CrossEntropy(), *terms], **kwargs)


def test_unknown_policy_is_rejected() -> None:
    with pytest.raises(ValueError, match="policy must be 'raise', 'skip' or 'ignore', got 'drop'"):
        NonFiniteLossGuard(policy="drop")


def test_a_nan_loss_puts_the_statistics_back_but_not_the_memories() -> None:
    module = _module(PixelContrast(memory_size=5, embedding_dim=16)).train()
    guard = NonFiniteLossGuard()
    statistics = {n: b.clone() for n, b in module.named_buffers() if "running_" in n}
    memory = next(m for m in module.modules() if isinstance(m, ClassMemory))
    guard.backup(module)
    module(torch.randn(2, 3, 32, 32))  # moves every BatchNorm's running statistics
    memory.entries.fill_(7.0)  # a memory is written after the backward pass of a kept batch only: not backed up
    assert any(not torch.equal(b, statistics[n]) for n, b in module.named_buffers() if n in statistics)
    nan = torch.tensor(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"non-finite training loss nan at step 0 \(epoch 0, batch 3\); "
                                                 r"terms: ce=nan; batch files: \['a.png'\]\. Weights and statistics"):
        guard.check(module, nan, {"ce": nan, "pixel": torch.tensor(1.0)}, {"image": None, "name": ["a.png"]}, 3)
    for name, value in module.named_buffers():
        if name in statistics:
            assert torch.equal(value, statistics[name]), name
    assert bool((memory.entries == 7.0).all())


def test_ignore_does_not_check() -> None:
    module = _module()
    assert NonFiniteLossGuard(policy="ignore").check(module, torch.tensor(float("inf")), {}, {}, 0)


class _NaNCountingUpdates(NaNAt):
    """NaN at one step; counts the after_backward calls (a memory update would run there)."""

    def __init__(self, step: int) -> None:
        super().__init__(step)
        self.updates = 0

    def after_backward(self) -> None:
        self.updates += 1


def test_a_guard_in_the_trainer_callbacks_replaces_the_modules(tmp_path: Path) -> None:
    term = _NaNCountingUpdates(1)
    module = _module(term)  # nonfinite="raise": the guard the module would add
    guard = NonFiniteLossGuard(policy="skip")
    data = SyntheticDataModule(num_train=12, num_val=2, image_size=(32, 32), batch_size=4, num_workers=0)
    trainer = Trainer(accelerator="cpu", max_steps=3, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, limit_val_batches=0,
                      default_root_dir=tmp_path, callbacks=[guard])
    with pytest.warns(UserWarning, match=r"non-finite training loss nan at step 1 .*batch skipped \(1 so far\)"):
        trainer.fit(module, data)
    assert [c for c in trainer.callbacks if isinstance(c, NonFiniteLossGuard)] == [guard]
    assert guard.skipped_batches == 1 and term.calls == 3 and term.updates == 2  # no update after the skipped batch
    assert trainer.logged_metrics["train/skipped_batches"] == 1
