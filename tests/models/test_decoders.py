import importlib
import math
from functools import partial
from pathlib import Path

import pytest
import torch
import yaml

from contrastseg.errors import ConfigError
from contrastseg.losses import LossContext, MultiScaleContrast, Projector
from contrastseg.models import (
    DeepLabV3Head,
    Encoder,
    HRNetV2Head,
    OCRHead,
    SegmentationModel,
    UPerNetHead,
)

H, W = 72, 104  # non-square, not a multiple of 32
EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"

DECODERS = {
    "hrnetv2": (partial(HRNetV2Head, channels=32), "hrnet_w18_small", None, False),
    "hrnetv2_aux": (partial(HRNetV2Head, channels=32, aux_index=2, aux_channels=16), "hrnet_w18_small", None, True),
    "ocr_hrnet": (partial(OCRHead, channels=32, key_channels=16), "hrnet_w18_small", None, True),
    "ocr_resnet": (partial(OCRHead, in_index=-1, aux_index=-2, channels=32, key_channels=16), "resnet18", 8, True),
    "deeplabv3": (partial(DeepLabV3Head, channels=32, aux_channels=16), "resnet18", 8, True),
    "upernet": (partial(UPerNetHead, channels=32, aux_channels=16), "resnet18", None, True),
    "upernet_swin": (partial(UPerNetHead, channels=32, aux_channels=16), "swin_tiny", None, True),
}


@pytest.mark.parametrize("name", DECODERS)
def test_decoder_forward_backward(name: str) -> None:
    decoder, encoder, output_stride, has_aux = DECODERS[name]
    model = SegmentationModel(5, encoder=Encoder(encoder, output_stride=output_stride), decoder=decoder)
    model.train()
    out = model(torch.randn(2, 3, H, W))
    assert out.logits.shape == (2, 5, H, W)
    assert (out.aux_logits is not None) == has_aux
    if has_aux:
        assert out.aux_logits.shape == (2, 5, H, W)
    for f, c, s in zip(out.features, model.feature_channels, model.feature_strides):
        assert f.shape == (2, c, math.ceil(H / s), math.ceil(W / s))
    (out.logits.sum() + (out.aux_logits.sum() if has_aux else 0)).backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, H, W)).aux_logits is None  # auxiliary heads only train


def test_upernet_swin_odd_input_size() -> None:
    # Whole-image validation (ADE20K) feeds sizes that are not multiples of Swin's patch size 4.
    h, w = 67, 101
    decoder, encoder, _, _ = DECODERS["upernet_swin"]
    model = SegmentationModel(5, encoder=Encoder(encoder), decoder=decoder).train()
    out = model(torch.randn(2, 3, h, w))
    assert out.logits.shape == out.aux_logits.shape == (2, 5, h, w)
    assert [tuple(f.shape[-2:]) for f in out.features] == [(math.ceil(h / s), math.ceil(w / s)) for s in (4, 8, 16, 32)]
    out.logits.sum().backward()


def test_upernet_fpn_features_for_contrast() -> None:
    model = SegmentationModel(5, encoder=Encoder("resnet18"), decoder=partial(UPerNetHead, channels=24),
                              contrast_features="decoder")
    out = model(torch.randn(2, 3, 64, 96))
    assert model.feature_channels == (24, 24, 24, 24) and model.feature_strides == (4, 8, 16, 32)
    assert [f.shape[1] for f in out.features] == [24] * 4
    with pytest.raises(ConfigError, match="decoder with feature maps"):
        SegmentationModel(5, encoder=Encoder("resnet18"), contrast_features="decoder")


def test_dilated_resnet_c2_c3_c5_for_contrast() -> None:
    # The paper contrasts C2, C3 and C5 (strides 4, 8, 8) of dilated ResNets.
    model = SegmentationModel(3, encoder=Encoder("resnet18", output_stride=8), decoder=DeepLabV3Head)
    term = MultiScaleContrast(stages=[0, 1, 3])
    term.bind(LossContext(3, 255, model.feature_channels, model.feature_strides))
    assert term.strides == [4, 8, 8] and term.scale_tags == ["s4", "s8_stage1", "s8_stage3"]
    assert term.loss.scale_weights == [1.0, 0.7, 0.7] and term.loss.cross_scale_pairs == [(0, 2)]


PAPER_PARAMS = [  # Table 3a (ADE20K, millions, auxiliary head included): the model each config builds
    ("DeepLabv3-R101", "ade20k_deeplabv3.yaml", 63),
    ("OCRNet-HR48", "ade20k_ocrnet.yaml", 71),
    ("UPerNet-R101", "ade20k_upernet_r101.yaml", 86),
    ("UPerNet-Swin-T", "ade20k_upernet_swin_t.yaml", 60),
    ("UPerNet-Swin-S", "ade20k_upernet_swin_s.yaml", 81),
    ("UPerNet-Swin-B", "ade20k_upernet_swin_b.yaml", 121),
    ("UPerNet-Swin-L", "ade20k_upernet_swin_l.yaml", 234),
]


def _model_from_config(config: str, num_classes: int) -> SegmentationModel:
    """The config's encoder (name, output stride) and decoder class, with random weights."""
    net = yaml.safe_load((EXPERIMENTS / config).read_text())["model"]["net"]["init_args"]
    module, _, name = net["decoder"]["class_path"].rpartition(".")
    decoder = partial(getattr(importlib.import_module(module), name), **net["decoder"].get("init_args", {}))
    encoder = Encoder(net["encoder"]["name"], output_stride=net["encoder"].get("output_stride"))
    return SegmentationModel(num_classes, encoder=encoder, decoder=decoder)


@pytest.mark.parametrize("name,config,millions", PAPER_PARAMS)
def test_parameter_counts_match_the_paper(name, config, millions) -> None:
    model = _model_from_config(config, 150)
    count = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(count / millions - 1) < 0.05, f"{name} ({config}): {count:.1f}M vs the paper's {millions}M"


@pytest.mark.parametrize("name", ["hrnetv2", "ocr_hrnet", "ocr_resnet", "deeplabv3", "upernet", "upernet_swin"])
def test_exported_model_has_no_projectors_and_exports(name: str) -> None:
    decoder, encoder, output_stride, _ = DECODERS[name]
    model = SegmentationModel(4, encoder=Encoder(encoder, output_stride=output_stride), decoder=decoder).eval()
    # Projectors belong to the contrastive term ("project" alone would match smp's ASPP projection conv).
    assert not any(isinstance(m, Projector) for m in model.modules())
    assert not any("projector" in n for n, _ in model.named_parameters())
    x = torch.randn(1, 3, H, W)
    program = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x).logits, model(x).logits, rtol=1e-4, atol=1e-4)
