from functools import partial

import torch

from contrastseg.models import Encoder, HRNetV2Head, SegmentationModel


def test_segmentation_model_shapes() -> None:
    model = SegmentationModel(5, encoder=Encoder("resnet18"), decoder=partial(HRNetV2Head, channels=32))
    out = model(torch.randn(2, 3, 72, 104))
    assert out.logits.shape == (2, 5, 72, 104)
    assert out.aux_logits is None
    assert [f.shape[1] for f in out.features] == list(model.feature_channels)
    assert model.feature_strides == (4, 8, 16, 32)


def test_hrnet_head_default_width_is_sum_of_stages() -> None:
    head = HRNetV2Head((48, 96, 192, 384), 19)
    assert head.fuse[0].out_channels == 720  # HRNetV2-W48
    feats = [torch.randn(1, c, 32 // (2**i), 48 // (2**i)) for i, c in enumerate((48, 96, 192, 384))]
    assert head(feats).shape == (1, 19, 32, 48)


def test_gradients_reach_every_parameter() -> None:
    model = SegmentationModel(3, encoder=Encoder("resnet18"), decoder=partial(HRNetV2Head, channels=16))
    model(torch.randn(2, 3, 64, 64)).logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
