from functools import partial

import numpy as np
import pytest
import torch
from lightning import Trainer

from contrastseg import ContrastSegModule, DataError
from contrastseg.data import SyntheticDataModule
from contrastseg.errors import ConfigError
from contrastseg.losses import CrossEntropy, LossTerm, TermOutput
from contrastseg.models import Encoder, HRNetV2Head, SegmentationModel


def _net(num_classes: int = 8) -> SegmentationModel:
    return SegmentationModel(num_classes, encoder=Encoder("resnet18"), decoder=partial(HRNetV2Head, channels=16))


def _data(**kw) -> SyntheticDataModule:
    kw = {"num_train": 8, "num_val": 6, "image_size": (64, 64), "batch_size": 4, "num_workers": 0, **kw}
    return SyntheticDataModule(**kw)


def _trainer(**kw) -> Trainer:
    return Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, **kw)


class Constant(LossTerm):
    """A term returning a fixed value and a sub-term, to check weighting and logging."""

    def __init__(self, value: float, *, weight: float = 1.0, name: str = "const") -> None:
        super().__init__(name=name, weight=weight)
        self.value = value

    def forward(self, output, target):
        v = output.logits.sum() * 0 + self.value
        return TermOutput(loss=v, logs={f"{self.name}_half": v / 2})


def test_plain_python_construction_and_training_step() -> None:
    module = ContrastSegModule(_net(), num_classes=8)
    dm = _data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    loss = module.training_step(batch, 0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in module.net.parameters())


def test_net_factory_receives_num_classes() -> None:
    module = ContrastSegModule(partial(SegmentationModel, encoder=Encoder("resnet18")), num_classes=3)
    assert module.net.decoder.classifier.out_channels == 3


def test_terms_are_weighted_summed_and_logged() -> None:
    terms = [CrossEntropy(), Constant(2.0, weight=0.5)]
    module = ContrastSegModule(_net(), num_classes=8, losses=terms)
    dm = _data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    out = module(batch["image"])
    total, logs = module.compute_loss(out, batch["mask"])
    torch.testing.assert_close(total, logs["ce"] + 0.5 * 2.0)
    assert set(logs) == {"ce", "const", "const_half"}
    trainer = _trainer(fast_dev_run=1)
    trainer.fit(module, datamodule=dm)
    logged = trainer.logged_metrics
    for key in ("train/loss", "train/loss_ce", "train/loss_const", "train/loss_const_half", "val/mIoU", "val/acc"):
        assert key in logged, key


def test_duplicate_term_names_rejected() -> None:
    with pytest.raises(ConfigError, match="unique"):
        ContrastSegModule(_net(), num_classes=8, losses=[CrossEntropy(), CrossEntropy()])


def test_validation_metrics_match_numpy_reference() -> None:
    module = ContrastSegModule(_net(), num_classes=8)
    dm = _data(val_batch_size=4)
    trainer = _trainer()
    (result,) = trainer.validate(module, datamodule=dm, verbose=False)
    # Reference: numpy confusion matrix over the same predictions, summed over the whole split.
    module.eval()
    cm = np.zeros((8, 8), np.int64)
    with torch.no_grad():
        for batch in dm.val_dataloader():
            pred = module(batch["image"]).logits.argmax(1).numpy().ravel()
            target = batch["mask"].numpy().ravel()
            keep = target != 255
            np.add.at(cm, (target[keep], pred[keep]), 1)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    assert abs(result["val/mIoU"] - np.nanmean(iou)) < 1e-5
    assert abs(result["val/acc"] - tp.sum() / cm.sum()) < 1e-5
    for k, name in enumerate(dm.class_names):
        if not np.isnan(iou[k]):
            assert abs(result[f"val/IoU_{name}"] - iou[k]) < 1e-5


def test_label_outside_classes_is_reported() -> None:
    module = ContrastSegModule(_net(4), num_classes=4)  # the synthetic data has 8 classes
    with pytest.raises(DataError, match=r"label value \d+ in synthetic/val/\d+ is outside 0..3"):
        _trainer(fast_dev_run=1).validate(module, datamodule=_data(), verbose=False)


def test_predict_returns_class_maps() -> None:
    module = ContrastSegModule(_net(), num_classes=8)
    preds = _trainer().predict(module, datamodule=_data())
    assert preds[0].shape == (4, 64, 64) and preds[0].dtype == torch.uint8


def test_low_resolution_logits_give_the_same_metrics() -> None:
    results = []
    for upsample_logits in (True, False):
        torch.manual_seed(0)
        net = SegmentationModel(8, encoder=Encoder("resnet18"), decoder=partial(HRNetV2Head, channels=16),
                                upsample_logits=upsample_logits)
        module = ContrastSegModule(net, num_classes=8)
        (result,) = _trainer().validate(module, datamodule=_data(val_batch_size=3), verbose=False)
        results.append(result)
    assert results[0].keys() == results[1].keys()
    for key in results[0]:
        assert abs(results[0][key] - results[1][key]) < 1e-5, key


def test_sliding_tta_evaluation_groups_and_metric_files(tmp_path) -> None:
    from contrastseg.evaluation import EvalConfig

    dm = _data(val_batch_size=2)
    module = ContrastSegModule(_net(), num_classes=8, class_groups=dm.class_groups,
                               evaluation=EvalConfig(mode="slide", crop_size=(48, 48), scales=(1.0, 0.75), flip=True))
    from lightning.pytorch.loggers import CSVLogger

    trainer = Trainer(accelerator="cpu", devices=1, logger=CSVLogger(str(tmp_path), name="run", version=0),
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    (result,) = trainer.validate(module, datamodule=dm, verbose=False)
    assert 0 <= result["val/mIoU"] <= 1 and "val/mIoU_stuff" in result and "val/loss" not in result
    data = __import__("json").loads((tmp_path / "run" / "version_0" / "val_metrics.json").read_text())
    assert abs(data["mIoU"] - result["val/mIoU"]) < 1e-5 and set(data["group_mIoU"]) == {"stuff", "things", "small"}


def test_side_jobs_are_callbacks_added_once_for_a_plain_trainer() -> None:
    from contrastseg.callbacks import ContrastHealthMonitor, EvalReport, NonFiniteLossGuard, RNGState
    from contrastseg.losses import MultiScaleContrast

    contrastive = ContrastSegModule(_net(), num_classes=8, losses=[CrossEntropy(), MultiScaleContrast()],
                                    nonfinite="skip")
    contrastive.trainer = _trainer(callbacks=[EvalReport()])
    added = contrastive.configure_callbacks()
    assert [type(c) for c in added] == [NonFiniteLossGuard, ContrastHealthMonitor, RNGState]  # not the user's kind
    assert added[0].policy == "skip"
    module, report = ContrastSegModule(_net(), num_classes=8), EvalReport()
    trainer = _trainer(fast_dev_run=1, callbacks=[report])
    data = _data(image_size=(32, 32), num_val=2)
    trainer.fit(module, datamodule=data)
    trainer.validate(module, datamodule=data, verbose=False)  # a second run of the same trainer adds nothing
    kinds = (NonFiniteLossGuard, EvalReport, RNGState)
    assert [sum(isinstance(c, kind) for c in trainer.callbacks) for kind in kinds] == [1, 1, 1]
    assert report in trainer.callbacks  # the user's instance, with its options
