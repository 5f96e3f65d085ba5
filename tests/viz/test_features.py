from functools import partial

import pytest
import torch
from lightning import Trainer

from contrastseg import ContrastSegModule
from contrastseg.data import SyntheticDataModule
from contrastseg.errors import ConfigError
from contrastseg.losses import CrossEntropy, MultiScaleContrast
from contrastseg.models import Encoder, HRNetV2Head, SegmentationModel
from contrastseg.viz import extract_features, load_module


def _module(contrast: bool) -> ContrastSegModule:
    net = SegmentationModel(8, encoder=Encoder("resnet18"), decoder=partial(HRNetV2Head, channels=16))
    losses = [CrossEntropy(), MultiScaleContrast(embedding_dim=32)] if contrast else [CrossEntropy()]
    return ContrastSegModule(net, num_classes=8, losses=losses)


def _data() -> SyntheticDataModule:
    return SyntheticDataModule(num_train=4, num_val=4, image_size=(64, 96), batch_size=2, num_workers=0)


def test_encoder_features_per_scale_balanced_and_labelled() -> None:
    sets = extract_features(_module(False), _data(), num_batches=2, per_class=20)
    assert [s.stride for s in sets] == [4, 8, 16, 32]
    for s, channels in zip(sets, (64, 128, 256, 512)):
        assert s.features.shape[1] == channels and s.features.shape[0] == s.labels.shape[0] > 0
        assert torch.allclose(s.features.norm(dim=1), torch.ones(len(s.features)), atol=1e-5)
        counts = torch.bincount(s.labels, minlength=8)
        assert counts.max() <= 20 and (s.labels != 255).all()


def test_a_module_passed_in_keeps_its_mode_and_device(monkeypatch) -> None:
    module = _module(False).train()
    seen = []
    monkeypatch.setattr(module.net, "forward", lambda x, f=module.net.forward: seen.append(module.training) or f(x))
    extract_features(module, _data(), num_batches=1, per_class=5, device="cpu")
    assert seen == [False], "features come from the model in eval mode"
    assert module.training and all(m.training for m in module.modules()), "the caller's training mode is back"
    assert next(module.parameters()).device.type == "cpu"


def test_features_match_the_model_at_the_sampled_pixels() -> None:
    """Recompute one batch by hand: every returned row is the feature vector of a pixel of its class."""
    module = _module(True).eval()
    dm = _data()
    sets = extract_features(module, dm, num_batches=1, per_class=5, source="projected", normalize=False)
    batch = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        maps = module.losses[1].embed(module.net(batch["image"]).features)
    for s, emb in zip(sets, maps):
        assert s.source == "projected" and s.features.shape[1] == 32
        stride = s.stride
        labels_s = batch["mask"][:, ::stride, ::stride]  # (B, h, w): nearest sampling, as in the loss
        rows = emb.permute(0, 2, 3, 1).reshape(-1, 32)  # (B, D, h, w) -> (B*h*w, D)
        dist = torch.cdist(s.features, rows, compute_mode="donot_use_mm_for_euclid_dist")  # (N, B*h*w)
        nearest = dist.argmin(dim=1)
        assert torch.allclose(dist.min(dim=1).values, torch.zeros(len(nearest)), atol=1e-4)
        assert torch.equal(labels_s.reshape(-1)[nearest], s.labels)


def test_projected_needs_a_contrastive_model_and_checkpoints_load(tmp_path) -> None:
    with pytest.raises(ConfigError, match="MultiScaleContrast"):
        extract_features(_module(False), _data(), source="projected")
    with pytest.raises(ConfigError, match="does not exist"):
        extract_features(tmp_path / "missing.ckpt", _data())
    module, dm = _module(True), _data()
    trainer = Trainer(accelerator="cpu", max_steps=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, dm)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    with pytest.raises(ConfigError, match="pass net="):
        load_module(tmp_path / "m.ckpt")  # built in Python with an nn.Module: the net is not in the hparams
    with pytest.raises(ConfigError, match="losses="):
        load_module(tmp_path / "m.ckpt", net=_module(True).net)  # its projectors need their term
    fresh = _module(True)
    loaded = load_module(tmp_path / "m.ckpt", net=fresh.net, losses=list(fresh.losses))
    a = extract_features(loaded, _data(), num_batches=1, source="projected", seed=1)
    b = extract_features(module, _data(), num_batches=1, source="projected", seed=1)
    for x, y in zip(a, b):
        assert torch.allclose(x.features, y.features, atol=1e-5) and torch.equal(x.labels, y.labels)
