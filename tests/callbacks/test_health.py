"""ContrastHealthMonitor: its gradient figures by hand, its figures in metrics.csv at the right steps, a monitored run
training exactly as an unmonitored one, the default wiring, and the warnings on constructed setups."""

from __future__ import annotations

import csv
import math
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning import Trainer
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from contrastseg import ContrastSegModule
from contrastseg.callbacks import ContrastHealthMonitor
from contrastseg.callbacks.health import gradient_figures
from contrastseg.data import SyntheticDataModule
from contrastseg.losses import CrossEntropy, MultiScaleContrast
from contrastseg.models import Encoder, HRNetV2Head, SegmentationModel


def _module(seed: int = 0, contrast_health: bool = True, **contrast) -> ContrastSegModule:
    torch.manual_seed(seed)
    net = SegmentationModel(8, encoder=Encoder("resnet18"), decoder=partial(HRNetV2Head, channels=16))
    return ContrastSegModule(net, num_classes=8, losses=[CrossEntropy(), MultiScaleContrast(**contrast)],
                             contrast_health=contrast_health)


def _data() -> SyntheticDataModule:
    return SyntheticDataModule(num_train=12, num_val=4, image_size=(128, 128), batch_size=4, num_workers=0)


def _trainer(tmp_path: Path | None = None, callbacks=(), **kw) -> Trainer:
    logger = CSVLogger(str(tmp_path), name="run") if tmp_path is not None else False
    return Trainer(accelerator="cpu", devices=1, logger=logger, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                   limit_val_batches=0, callbacks=list(callbacks), **kw)


def _rows(tmp_path: Path) -> list[dict[str, str]]:
    with next(tmp_path.rglob("metrics.csv")).open() as f:
        return list(csv.DictReader(f))


def test_gradient_figures_by_hand() -> None:
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    ce = (w * torch.tensor([3.0, 0.0])).sum()  # gradient (3, 0)
    ms = (w * torch.tensor([1.0, 1.0])).sum()  # gradient (1, 1)
    cs = (w * torch.tensor([-1.0, 1.0])).sum()  # gradient (-1, 1): contrast sum (0, 2)
    figures = gradient_figures([w], {"ce": ce}, {"ms_s4": ms, "cs_4_32": cs})
    assert float(figures["norm/ce"]) == pytest.approx(3.0)
    assert float(figures["norm/ms_s4"]) == pytest.approx(math.sqrt(2))
    assert float(figures["norm/cs_4_32"]) == pytest.approx(math.sqrt(2))
    assert float(figures["norm/contrast"]) == pytest.approx(2.0)
    assert float(figures["ratio"]) == pytest.approx(2.0 / 3.0)
    assert float(figures["cos"]) == pytest.approx(0.0, abs=1e-7)  # (3, 0) against (0, 2)
    assert w.grad is None, "measuring leaves the parameters' .grad alone"


def test_opposite_gradients_have_cosine_minus_one() -> None:
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    figures = gradient_figures([w], {"ce": (2 * w).sum()}, {"ms_s4": (-w).sum()})
    assert float(figures["cos"]) == pytest.approx(-1.0)


def test_figures_land_in_metrics_csv_at_their_steps(tmp_path: Path) -> None:
    monitor = ContrastHealthMonitor(grad_every_n_steps=2)
    _trainer(tmp_path, [monitor], max_steps=3, log_every_n_steps=1).fit(_module(), datamodule=_data())
    rows = [r for r in _rows(tmp_path) if any(k.startswith("train/contrast_health/") and v for k, v in r.items())]
    health = lambda r: {k.removeprefix("train/contrast_health/") for k, v in r.items()  # noqa: E731
                        if k.startswith("train/contrast_health/") and v}
    steps = sorted({int(r["step"]) for r in rows})
    assert steps == [0, 1, 2]
    keys = set().union(*(health(r) for r in rows))
    for tag in ("s4", "s8", "s16", "s32"):
        for stat in ("anchors", "pairs", "sampled_pairs", "views", "classes_with_positives", "zero_share",
                     "alignment", "uniformity", "median_pair_pixels"):
            assert f"{tag}/{stat}" in keys, f"{tag}/{stat}"
    for pair in ("cs_4_32", "cs_4_16"):
        assert {f"{pair}/zero_share", f"{pair}/shared_classes"} <= keys
    grads = {"grad_norm/ce", "grad_norm/ms_s4", "grad_norm/ms_s32", "grad_norm/cs_4_32", "grad_norm/contrast",
             "grad_ratio", "grad_cos", "overhead"}
    assert grads <= keys
    measured = sorted({int(r["step"]) for r in rows if "grad_cos" in health(r)})
    assert measured == [0, 2], "a measurement is logged once, in its own step"
    anchors = [float(r["train/contrast_health/s4/anchors"]) for r in rows if r.get("train/contrast_health/s4/anchors")]
    assert all(a > 0 for a in anchors)


def test_a_monitored_run_trains_exactly_as_an_unmonitored_one(tmp_path: Path) -> None:
    weights = []
    for health in (True, False):
        module = _module(contrast_health=health)
        callbacks = [ContrastHealthMonitor(grad_every_n_steps=1)] if health else []
        _trainer(None, callbacks, max_steps=3, log_every_n_steps=1).fit(module, datamodule=_data())
        weights.append({k: v.clone() for k, v in module.state_dict().items()})
    for key, value in weights[0].items():
        torch.testing.assert_close(value, weights[1][key], rtol=0, atol=0, msg=key)


def test_the_module_adds_a_monitor_to_contrastive_runs_only() -> None:
    def monitors(module, callbacks=()):
        trainer = _trainer(None, callbacks, max_steps=1)
        trainer.fit(module, datamodule=_data())
        return [c for c in trainer.callbacks if isinstance(c, ContrastHealthMonitor)]

    assert len(monitors(_module())) == 1
    assert monitors(_module(contrast_health=False)) == []
    torch.manual_seed(0)
    plain = ContrastSegModule(SegmentationModel(8, encoder=Encoder("resnet18"),
                                                decoder=partial(HRNetV2Head, channels=16)), num_classes=8)
    assert monitors(plain) == []
    mine = ContrastHealthMonitor(grad_every_n_steps=7)
    assert monitors(_module(), [mine]) == [mine], "the user's monitor and its options are kept"


def test_warns_when_min_views_exceed_the_typical_pair_and_max_anchors_the_pairs(tmp_path: Path) -> None:
    monitor = ContrastHealthMonitor(grad_every_n_steps=0, warn_after_steps=2)
    with pytest.warns(UserWarning, match=r"min_views_per_class=60 is above the median .* in 2 of 2 logged steps") \
            as record:
        _trainer(tmp_path, [monitor], max_steps=2, log_every_n_steps=1).fit(
            _module(min_views_per_class=60, max_anchors=8), datamodule=_data())
    assert any("max_anchors=8 is below the number of" in str(w.message) for w in record)


def test_no_budget_warning_for_the_paper_defaults_on_large_enough_images(tmp_path: Path, recwarn) -> None:
    monitor = ContrastHealthMonitor(grad_every_n_steps=0, warn_after_steps=2)
    _trainer(tmp_path, [monitor], max_steps=2, log_every_n_steps=1).fit(_module(stages=[0, 1]), datamodule=_data())
    assert not [w for w in recwarn if "contrastive scale" in str(w.message)]


def _one_class_batches(n: int) -> DataLoader:
    """Every label is class 2: no scale ever has two classes with positives."""
    batch = {"image": torch.randn(2, 3, 64, 64), "mask": torch.full((2, 64, 64), 2)}
    return DataLoader([batch] * n, batch_size=None)


def test_warns_when_most_steps_have_fewer_than_two_classes_with_positives() -> None:
    monitor = ContrastHealthMonitor(grad_every_n_steps=0, warn_after_steps=3)
    with pytest.warns(UserWarning, match=r"fewer than two classes had positives in 100% of"):
        _trainer(None, [monitor], max_steps=4, log_every_n_steps=1).fit(_module(), _one_class_batches(4))


def test_warns_when_a_resumed_run_has_another_process_count() -> None:
    monitor = ContrastHealthMonitor()
    monitor.load_state_dict({"world_size": 4})
    module = _module()
    trainer = SimpleNamespace(world_size=1)
    with pytest.warns(UserWarning, match=r"saved with 4 process\(es\) and continues with 1"):
        monitor.on_train_start(trainer, module)
    monitor.on_train_end(trainer, module)
    assert not module.losses[1].loss.keep_anchors


@pytest.mark.slow
@pytest.mark.parametrize("term", ["PixelContrast", "RegionContrast"])
def test_memory_terms_are_monitored_as_whole_contrastive_terms(tmp_path: Path, term: str) -> None:
    import contrastseg.losses as losses

    torch.manual_seed(0)
    net = SegmentationModel(8, encoder=Encoder("resnet18"), decoder=partial(HRNetV2Head, channels=16))
    module = ContrastSegModule(net, num_classes=8, losses=[CrossEntropy(), getattr(losses, term)(embedding_dim=16)])
    trainer = _trainer(tmp_path, [ContrastHealthMonitor(grad_every_n_steps=2)], max_steps=3, log_every_n_steps=1)
    trainer.fit(module, datamodule=_data())
    keys = {k.removeprefix("train/contrast_health/") for r in _rows(tmp_path) for k, v in r.items()
            if k.startswith("train/contrast_health/") and v}
    name = module.losses[1].name
    memory = "pixel_memory" if term == "PixelContrast" else "memory"
    assert {f"grad_norm/{name}", "grad_norm/ce", "grad_norm/contrast", "grad_ratio", f"{name}/{memory}/entries",
            f"{name}/{memory}/classes"} <= keys
    entries = [float(r[f"train/contrast_health/{name}/{memory}/entries"]) for r in _rows(tmp_path)
               if r.get(f"train/contrast_health/{name}/{memory}/entries")]
    assert entries == sorted(entries) and entries[-1] > 0  # the memory fills step by step
