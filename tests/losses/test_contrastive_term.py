from functools import partial

import pytest
import torch

from contrastseg import ContrastSegModule
from contrastseg.errors import ConfigError
from contrastseg.losses import CrossEntropy, LossContext, MultiScaleContrast
from contrastseg.models import Encoder, HRNetV2Head, SegmentationModel, SegOutput

CHANNELS, STRIDES = (16, 32, 64, 128), (4, 8, 16, 32)


def _bound(**kw) -> MultiScaleContrast:
    term = MultiScaleContrast(**kw)
    term.bind(LossContext(num_classes=3, ignore_index=255, feature_channels=CHANNELS, feature_strides=STRIDES))
    return term


def _features(b=2, h=128, w=192):
    return [torch.randn(b, c, h // s, w // s) for c, s in zip(CHANNELS, STRIDES)]


def _labels(b=2, h=128, w=192):
    bands = (torch.arange(w) // 64) % 3
    return bands.expand(b, h, w).clone()


def test_projectors_follow_the_model_and_the_paper() -> None:
    term = _bound()
    assert len(term.projectors) == 4
    proj = term.projectors[1]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in proj) == 2  # depth 2: Conv-ReLU-BN twice
    assert proj[0].in_channels == 32 and proj[-1].out_channels == 256
    assert term.loss.scale_weights == [1.0, 0.7, 0.4, 0.1]
    assert term.loss.cross_scale_pairs == [(0, 3), (0, 2)]
    assert len(_bound(projector_depth=1, embedding_dim=64).projectors[0]) == 4


def test_logs_every_sub_term_and_applies_lambdas() -> None:
    term = _bound(lambda_ms=0.1, lambda_cs=0.2)
    out = term(SegOutput(torch.zeros(1), None, _features()), _labels())
    assert set(out.logs) == {"ms_s4", "ms_s8", "ms_s16", "ms_s32", "cs_4_32", "cs_4_16", "ms", "cs"}
    ms = sum(w * out.logs[f"ms_s{s}"] for w, s in zip((1.0, 0.7, 0.4, 0.1), STRIDES))
    cs = out.logs["cs_4_32"] + out.logs["cs_4_16"]
    torch.testing.assert_close(out.logs["ms"], ms)
    torch.testing.assert_close(out.loss, 0.1 * ms + 0.2 * cs)
    assert all(torch.isfinite(v) and v > 0 for v in out.logs.values())


def test_stage_subset_and_single_scale() -> None:
    term = _bound(stages=[3], cross_scale_pairs=[])  # the paper's single-scale L_c on the last stage
    out = term(SegOutput(torch.zeros(1), None, _features()), _labels())
    assert set(out.logs) == {"ms_s32", "ms", "cs"} and out.logs["cs"] == 0
    assert term.projectors[0][0].in_channels == 128


def test_linear_warmup_of_both_lambdas() -> None:
    term = _bound(warmup_steps=4)
    term.train()
    factors = [term(SegOutput(torch.zeros(1), None, _features()), _labels()).logs["contrast_warmup"].item()
               for _ in range(6)]
    assert factors == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert int(term.state_dict()["steps_seen"]) == 6  # checkpointed, so a resumed run continues the ramp


@pytest.mark.parametrize("kw,match", [({"stages": [4]}, "stages"), ({"scale_weights": [1.0]}, "scale_weights"),
                                      ({"cross_scale_pairs": [(0, 0)]}, "two different scales")])
def test_bad_options_are_config_errors(kw, match) -> None:
    with pytest.raises(ConfigError, match=match):
        _bound(**kw)


def _module(**kw) -> ContrastSegModule:
    net = SegmentationModel(3, encoder=Encoder("resnet18"), decoder=partial(HRNetV2Head, channels=16))
    return ContrastSegModule(net, num_classes=3, losses=[CrossEntropy(), MultiScaleContrast(**kw)])


@pytest.mark.parametrize("all_ignore", [False, True])
def test_every_parameter_gets_a_gradient(all_ignore: bool) -> None:
    module = _module()
    labels = _labels(h=128, w=192)
    if all_ignore:
        labels[:] = 255
    batch = {"image": torch.randn(2, 3, 128, 192), "mask": labels}
    loss = module.training_step(batch, 0)
    loss.backward()
    missing = [n for n, p in module.named_parameters() if p.grad is None]
    assert not missing, missing
    assert torch.isfinite(loss)
    projector_params = {id(p) for p in module.losses[1].parameters()}
    assert projector_params and not projector_params & {id(p) for p in module.net.parameters()}


def test_bf16_autocast_matches_float32() -> None:
    term = _bound()
    term.eval()  # fixed BatchNorm statistics so both runs see the same function
    feats, labels = _features(), _labels()
    g = torch.Generator().manual_seed(0)
    out32 = term.loss(term.embed(feats), labels, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        emb = term.embed(feats)
        assert emb[0].dtype == torch.bfloat16
        out16 = term.loss(emb, labels, generator=torch.Generator().manual_seed(0))
    assert out16.total.dtype == torch.float32
    torch.testing.assert_close(out16.total, out32.total, rtol=3e-2, atol=3e-2)


def test_training_draws_anchors_from_the_labels_before_the_forward_pass(monkeypatch) -> None:
    from contrastseg.losses import multiscale, sampling

    module = _module().train()
    events = []
    real_sample, real_draw = multiscale.sample_anchor_indices_multiscale, multiscale.draw_anchor_indices_multiscale
    real_resolve = sampling.PendingAnchors.resolve
    monkeypatch.setattr(multiscale, "sample_anchor_indices_multiscale",
                        lambda *a, **k: events.append("sample") or real_sample(*a, **k))
    monkeypatch.setattr(multiscale, "draw_anchor_indices_multiscale",
                        lambda *a, **k: events.append("draw") or real_draw(*a, **k))
    monkeypatch.setattr(sampling.PendingAnchors, "resolve", lambda self: events.append("resolve") or real_resolve(self))
    module.net.register_forward_hook(lambda *_: events.append("forward"))
    batch = {"image": torch.randn(2, 3, 128, 192), "mask": _labels(h=128, w=192)}
    loss = module.training_step(batch, 0)
    # One draw, queued before the forward pass; its size is read (the host sync) only after the forward was queued.
    assert events == ["draw", "forward", "resolve"]
    assert torch.isfinite(loss) and module.losses[1]._presampled is None
    events.clear()
    module.losses[1](module(batch["image"]), batch["mask"])  # called without prepare(): samples inside
    assert events == ["forward", "sample", "resolve"]
