import math
import socket
import time
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
from huggingface_hub import constants as hf_constants

from contrastseg.errors import ConfigError
from contrastseg.models import ENCODERS, Encoder, list_encoders

# Non-square and not a multiple of 32, so ceil(H / s) and padding inside the backbones are exercised.
H, W = 72, 104


@pytest.mark.parametrize("name", list_encoders())
def test_encoder_contract(name: str) -> None:
    enc = Encoder(name).eval()
    assert len(enc.channels) == len(enc.strides) >= 4
    assert list(enc.strides) == sorted(enc.strides), "stages must go fine to coarse"
    with torch.no_grad():
        feats = enc(torch.randn(2, 3, H, W))
    assert len(feats) == len(enc.channels)
    for f, c, s in zip(feats, enc.channels, enc.strides):
        assert f.shape == (2, c, math.ceil(H / s), math.ceil(W / s)), (name, f.shape, c, s)


@pytest.mark.parametrize("size", [(67, 101), (5, 3), (130, 227)])
def test_swin_any_input_size(size: tuple[int, int]) -> None:
    # Whole-image validation sizes need not be multiples of the patch size (4) or of the windows (7 * stride).
    h, w = size
    enc = Encoder("swin_tiny").eval()
    with torch.no_grad():
        feats = enc(torch.randn(1, 3, h, w))
    assert [tuple(f.shape[1:]) for f in feats] == [
        (c, math.ceil(h / s), math.ceil(w / s)) for c, s in zip(enc.channels, enc.strides)
    ]


def test_swin_shifts_windows_in_every_stage() -> None:
    # As the segmentation Swin: odd blocks shift by half a window in all stages (timm would drop the shift where
    # the 224-pixel pretraining resolution fits one window, i.e. Swin-T's last stage).
    enc = Encoder("swin_tiny")
    for stage in (m for m in enc.backbone.modules() if hasattr(m, "blocks")):
        assert [tuple(b.shift_size) for b in stage.blocks][1::2] == [(3, 3)] * (len(stage.blocks) // 2)


def test_swin_stages_are_layer_normalised() -> None:
    """As the segmentation Swin (mmseg's norm0..norm3): every output stage is a LayerNorm of the backbone's stage
    output, over channels per position (identity weights at initialisation)."""
    enc = Encoder("swin_tiny").eval()
    image = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        feats = enc(image)
        raw = enc.backbone(image)  # (B, h, w, C) per stage, before the norms
    assert [n.normalized_shape for n in enc.norms] == [(c,) for c in enc.channels]
    for f, r in zip(feats, raw):
        expected = torch.nn.functional.layer_norm(r, r.shape[-1:]).permute(0, 3, 1, 2)  # (B, h, w, C) -> NCHW
        torch.testing.assert_close(f, expected)
        torch.testing.assert_close(f.mean(1), torch.zeros_like(f.mean(1)), atol=1e-5, rtol=0)
    assert Encoder("resnet18").norms is None


def test_hrnet_returns_raw_branches() -> None:
    assert Encoder("hrnet_w48").channels == (48, 96, 192, 384)
    assert Encoder("hrnet_w18_small").strides == (4, 8, 16, 32)


@pytest.mark.parametrize("output_stride,strides", [(8, (4, 8, 8, 8)), (16, (4, 8, 16, 16)), (32, (4, 8, 16, 32))])
def test_resnet_output_stride(output_stride: int, strides: tuple[int, ...]) -> None:
    enc = Encoder("resnet18", output_stride=output_stride)
    assert enc.strides == strides
    feats = enc(torch.randn(1, 3, 64, 96))
    assert [f.shape[-2:] for f in feats] == [torch.Size((64 // s, 96 // s)) for s in strides]


@pytest.mark.parametrize("name", ["resnet50", "resnet101d"])
@pytest.mark.parametrize("output_stride,strides", [(8, (4, 8, 8, 8)), (16, (4, 8, 16, 16))])
def test_deep_resnets_dilate_to_the_output_stride(name: str, output_stride: int, strides: tuple[int, ...]) -> None:
    enc = Encoder(name, output_stride=output_stride)
    assert enc.strides == strides and enc.channels == (256, 512, 1024, 2048)
    feats = enc(torch.randn(1, 3, 64, 96))
    assert [f.shape[-2:] for f in feats] == [torch.Size((64 // s, 96 // s)) for s in strides]
    assert [f.shape[1] for f in feats] == list(enc.channels)


def test_unknown_name_lists_known() -> None:
    with pytest.raises(ConfigError, match="unknown encoder name 'resnet1000'.*hrnet_w48.*swin_tiny"):
        Encoder("resnet1000")


def test_output_stride_not_supported() -> None:
    with pytest.raises(ConfigError, match="output_stride=8"):
        Encoder("swin_tiny", output_stride=8)


def test_checkpoint_path_loads_local_weights(tmp_path) -> None:
    source = timm.create_model(ENCODERS["resnet18"].timm_name, pretrained=False)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    enc = Encoder("resnet18", checkpoint_path=str(path))
    torch.testing.assert_close(enc.backbone.conv1.weight, source.conv1.weight)
    torch.testing.assert_close(enc.backbone.layer4[1].conv2.weight, source.layer4[1].conv2.weight)


def test_missing_checkpoint_path(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Encoder("resnet18", checkpoint_path=str(tmp_path / "nope.pth"))


@pytest.fixture
def empty_hub(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache in ``tmp_path``, with the hub offline (tests/conftest.py sets HF_HUB_OFFLINE=1).

    huggingface_hub reads its environment once, at import, so its constants are patched as well as the variables.
    """
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture
def unreachable_hub(empty_hub, monkeypatch) -> Path:
    """:func:`empty_hub` with HF_HUB_OFFLINE unset and the hub endpoint a closed local port (no proxy)."""
    endpoint = "http://127.0.0.1:9"  # the discard port: closed, so a connect is refused at once
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(hf_constants, "ENDPOINT", endpoint)
    template = endpoint + "/{repo_id}/resolve/{revision}/{filename}"  # what the old code's requests would use
    monkeypatch.setattr(hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    return empty_hub


def _no_network(*args, **kwargs):
    raise AssertionError(f"network connection attempted: {args}")


_ADVICE = r"model\.net\.init_args\.encoder\.checkpoint_path .*pretrained: false"


@pytest.mark.timeout(30)
def test_pretrained_offline_fails_fast_without_a_request(empty_hub, monkeypatch) -> None:
    monkeypatch.setattr(socket, "create_connection", _no_network)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=f"'resnet18'.*'timm/resnet18.a1_in1k'.*HF_HUB_OFFLINE is set.*{_ADVICE}"):
        Encoder("resnet18", pretrained=True)
    assert time.perf_counter() - start < 5


@pytest.mark.timeout(30)
def test_pretrained_unreachable_hub_fails_fast(unreachable_hub) -> None:
    # huggingface_hub alone retries for about 45 s before giving up.
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=f"'timm/resnet18.a1_in1k'.*127.0.0.1:9 is unreachable.*{_ADVICE}"):
        Encoder("resnet18", pretrained=True)
    assert time.perf_counter() - start < 5


@pytest.mark.timeout(30)
@pytest.mark.parametrize("hub,filename", [("empty_hub", "model.safetensors"), ("unreachable_hub", "pytorch_model.bin")])
def test_pretrained_weights_load_from_the_cache_without_a_request(hub, filename, request, monkeypatch) -> None:
    cache = request.getfixturevalue(hub)
    source = timm.create_model("resnet18", pretrained=False)
    # The layout huggingface_hub writes: refs/main names the snapshot, which holds the file.
    repo = cache / "models--timm--resnet18.a1_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    path = repo / "snapshots" / ("0" * 40) / filename
    if filename.endswith(".safetensors"):
        safetensors.torch.save_file(source.state_dict(), path)
    else:
        torch.save(source.state_dict(), path)
    monkeypatch.setattr(socket, "create_connection", _no_network)
    enc = Encoder("resnet18", pretrained=True)
    torch.testing.assert_close(enc.backbone.layer4[1].conv2.weight, source.layer4[1].conv2.weight)


@pytest.mark.timeout(30)
def test_checkpoint_path_needs_no_hub(unreachable_hub, tmp_path, monkeypatch) -> None:
    source = timm.create_model("resnet18", pretrained=False)
    torch.save(source.state_dict(), tmp_path / "resnet18.pth")
    monkeypatch.setattr(socket, "create_connection", _no_network)
    enc = Encoder("resnet18", pretrained=True, checkpoint_path=str(tmp_path / "resnet18.pth"))
    torch.testing.assert_close(enc.backbone.conv1.weight, source.conv1.weight)


def test_unreadable_checkpoint_names_the_key(tmp_path) -> None:
    (tmp_path / "resnet18.pth").write_text("not a state dict")
    with pytest.raises(ConfigError, match=r"could not load file .*model\.net\.init_args\.encoder\.checkpoint_path"):
        Encoder("resnet18", checkpoint_path=str(tmp_path / "resnet18.pth"))


# --- checkpoint_path: every backbone weight must come from the file (timm loads features_only models non-strictly) ---

_KEY = r"\(model\.net\.init_args\.encoder\.checkpoint_path\) does not fit the model: "


def _full_state(timm_name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """The state dict of a randomly initialised full timm model (classifier included), as a timm / torchvision file."""
    torch.manual_seed(seed)
    return timm.create_model(timm_name, pretrained=False).state_dict()


def _assert_backbone_is(enc: Encoder, state: dict[str, torch.Tensor]) -> None:
    own = enc.backbone.state_dict()
    for key, value in own.items():  # timm's feature wrapper names Swin's stage layers.0 as layers_0
        torch.testing.assert_close(value, state[key] if key in state else state[key.replace("_", ".", 1)], msg=key)


@pytest.mark.parametrize("name,suffix", [("resnet18", ".pth"), ("resnet18", ".safetensors"),
                                         ("hrnet_w18_small", ".pth"), ("swin_tiny", ".pth")])
def test_checkpoint_path_loads_every_backbone_weight(name: str, suffix: str, tmp_path) -> None:
    state = _full_state(ENCODERS[name].timm_name)
    path = tmp_path / f"{name}{suffix}"
    safetensors.torch.save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)
    _assert_backbone_is(Encoder(name, checkpoint_path=str(path)), state)


@pytest.mark.parametrize("wrap", [
    lambda sd: {"state_dict": sd, "epoch": 3},  # a training checkpoint
    lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}},  # timm's train.py under DDP
    lambda sd: {f"backbone.{k}": v for k, v in sd.items()},  # a backbone-only export
])
def test_checkpoint_path_unwraps_state_dict_and_prefixes(wrap, tmp_path) -> None:
    state = _full_state("resnet18")
    torch.save(wrap(state), tmp_path / "resnet18.pth")
    _assert_backbone_is(Encoder("resnet18", checkpoint_path=str(tmp_path / "resnet18.pth")), state)


def test_checkpoint_path_adapts_the_first_conv_to_in_chans(tmp_path) -> None:
    state = _full_state("resnet18")
    torch.save(state, tmp_path / "resnet18.pth")
    enc = Encoder("resnet18", checkpoint_path=str(tmp_path / "resnet18.pth"), in_chans=1)
    torch.testing.assert_close(enc.backbone.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))  # as timm


@pytest.mark.parametrize("name,source,match", [
    # resnet34 has every resnet18 key with its shape (same widths, more blocks): only its extra blocks tell.
    ("resnet18", "resnet34", r"96 unexpected keys \(layer1\.2\.conv1\.weight, "),
    ("resnet18", "hrnet_w18_small", r"85 of 100 expected keys missing \(layer1\.1\.conv1\.weight, .*; 11 shape "
                                    r"mismatches \(conv1\.weight \(file \(64, 3, 3, 3\), model \(64, 3, 7, 7\)\)"),
    ("hrnet_w18_small", "resnet18", r"340 of 355 expected keys missing \(conv2\.weight, .*; 104 unexpected keys"),
])
def test_checkpoint_of_another_architecture_names_the_key(name: str, source: str, match: str, tmp_path) -> None:
    path = tmp_path / f"{source}.pth"
    torch.save(_full_state(source), path)
    with pytest.raises(ConfigError, match=f"encoder '{name}'.*file '{path}' {_KEY}{match}"):
        Encoder(name, checkpoint_path=str(path))


def _drop_last_block(sd: dict) -> dict:
    return {k: v for k, v in sd.items() if not k.startswith("layer4.1.")}


def _narrow_stem(sd: dict) -> dict:
    return {**sd, "conv1.weight": sd["conv1.weight"][:, :, :3, :3]}


def _lightning(sd: dict) -> dict:
    return {"state_dict": {**{f"net.encoder.backbone.{k}": v for k, v in sd.items()}, "net.decoder.w": torch.ones(1)}}


@pytest.mark.parametrize("edit,match", [
    (_drop_last_block, r"10 of 100 expected keys missing \(layer4\.1\.conv1\.weight, layer4\.1\.bn1\.weight, "),
    (_narrow_stem, r"1 shape mismatches \(conv1\.weight \(file \(64, 3, 3, 3\), model \(64, 3, 7, 7\)\)\)"),
    (_lightning, r"100 of 100 expected keys missing .*unexpected keys \(net\.encoder\.backbone\.conv1\.weight, "),
])
def test_incomplete_checkpoint_names_the_key(edit, match: str, tmp_path) -> None:
    path = tmp_path / "resnet18.pth"
    torch.save(edit(_full_state("resnet18")), path)
    with pytest.raises(ConfigError, match=f"file '{path}' {_KEY}{match}"):
        Encoder("resnet18", checkpoint_path=str(path))


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")  # unpickling this creates the marker file


def test_checkpoint_is_read_without_running_code(tmp_path) -> None:
    path, marker = tmp_path / "resnet18.pth", tmp_path / "ran"
    torch.save({"state_dict": _full_state("resnet18"), "hyper_parameters": _RunsCode(marker)}, path)
    with pytest.raises(ConfigError, match=r"could not load file .*weights_only=True.*checkpoint_path"):
        Encoder("resnet18", checkpoint_path=str(path))
    assert not marker.exists()


def test_checkpoint_path_loads_a_torchvision_resnet(tmp_path) -> None:
    # torchvision's ResNet keys are timm's (no filter involved); its file has the fc classifier, tolerated.
    torchvision = pytest.importorskip("torchvision")
    state = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(state, tmp_path / "resnet18-f37072fd.pth")
    _assert_backbone_is(Encoder("resnet18", checkpoint_path=str(tmp_path / "resnet18-f37072fd.pth")), state)
    with pytest.raises(ConfigError, match=r"expected keys missing \(conv1\.0\.weight, "):  # deep stem: not this file
        Encoder("resnet50d", checkpoint_path=str(tmp_path / "resnet18-f37072fd.pth"))
