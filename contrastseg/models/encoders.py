"""Encoders: timm ``features_only`` backbones behind one contract.

An encoder maps an image ``(B, 3, H, W)`` to a list of feature maps, fine to coarse, and exposes ``channels`` and
``strides`` (one entry per returned map). Stage ``i`` has spatial size ``ceil(H / strides[i])`` for every
registered backbone. Channel numbers are read from timm's ``feature_info``, never typed by hand.
"""

from __future__ import annotations

import pickle
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import safetensors.torch
import timm
import torch
import torch.nn.functional as F
from huggingface_hub import constants as hf_constants
from huggingface_hub import try_to_load_from_cache
from timm.models import adapt_input_conv, get_pretrained_cfg
from torch import Tensor, nn

from contrastseg._compat import timm_checkpoint_filter
from contrastseg.errors import ConfigError

__all__ = ["ENCODERS", "Encoder", "EncoderSpec", "list_encoders"]


@dataclass(frozen=True)
class EncoderSpec:
    """How a user-facing encoder name maps onto timm.

    Attributes:
        timm_name: the ``timm.create_model`` name.
        out_indices: timm feature indices to return (fine to coarse).
        kwargs: extra keyword arguments for ``timm.create_model``.
        nhwc: the backbone returns channels-last maps that must be permuted to NCHW.
        dilatable: ``output_stride`` 8/16 is supported (dilated ResNets).
        pad_to: the input is zero-padded to a multiple of this (HRNet's fusion needs sizes divisible by 32, Swin's
            patch embedding by its patch size 4) and the features are cropped back to ``ceil(size / stride)``.
    """

    timm_name: str
    out_indices: tuple[int, ...] = (1, 2, 3, 4)
    kwargs: dict[str, Any] = field(default_factory=dict)
    nhwc: bool = False
    dilatable: bool = False
    pad_to: int = 1


def _resnet(timm_name: str) -> EncoderSpec:
    return EncoderSpec(timm_name, dilatable=True)


def _hrnet(timm_name: str) -> EncoderSpec:
    # feature_location="" returns the raw high-resolution branches (e.g. 48/96/192/384 for W48), which is what
    # HRNetV2 heads and the paper's contrastive terms use, instead of timm's "incre" classification neck.
    return EncoderSpec(timm_name, kwargs={"feature_location": ""}, pad_to=32)


def _swin(timm_name: str) -> EncoderSpec:
    # Any crop or validation size (e.g. whole ADE20K images): the patch embedding needs H and W divisible by the
    # patch size (4), so the input is zero-padded to a multiple of 4 (bottom/right, as mmseg's Swin does);
    # everything after that timm handles: strict_img_size=False builds the shifted-window attention masks for the
    # actual size, window attention pads each stage to a multiple of the window, and patch merging pads odd
    # sizes, so stage i has ceil(H / stride_i) rows. always_partition=True keeps the shifted windows in every
    # stage as the segmentation Swin does (timm would otherwise drop the shift in stages whose 224/384-pixel
    # pretraining resolution fits one window, e.g. Swin-T's last stage); no parameter depends on it.
    return EncoderSpec(
        timm_name, out_indices=(0, 1, 2, 3), kwargs={"strict_img_size": False, "always_partition": True},
        nhwc=True, pad_to=4,
    )


ENCODERS: dict[str, EncoderSpec] = {
    "resnet18": _resnet("resnet18"),
    "resnet34": _resnet("resnet34"),
    "resnet50": _resnet("resnet50"),
    "resnet101": _resnet("resnet101"),
    "resnet50d": _resnet("resnet50d"),  # deep stem (three 3x3 convs), as segmentation codebases use
    "resnet101d": _resnet("resnet101d"),
    "hrnet_w18_small": _hrnet("hrnet_w18_small"),
    "hrnet_w18": _hrnet("hrnet_w18"),
    "hrnet_w32": _hrnet("hrnet_w32"),
    "hrnet_w48": _hrnet("hrnet_w48"),
    "swin_tiny": _swin("swin_tiny_patch4_window7_224"),
    "swin_small": _swin("swin_small_patch4_window7_224"),
    "swin_base": _swin("swin_base_patch4_window12_384"),
    "swin_large": _swin("swin_large_patch4_window12_384"),
}


def list_encoders() -> list[str]:
    """Return the encoder names accepted by :class:`Encoder`, sorted."""
    return sorted(ENCODERS)


_CHECKPOINT_KEY = "model.net.init_args.encoder.checkpoint_path"


def _pretrained_advice(timm_name: str) -> str:
    """What to do when timm's pretrained weights cannot be loaded."""
    return (
        f"Set {_CHECKPOINT_KEY} to a local timm / torchvision state-dict file, or pretrained: false to train from "
        f"scratch (to fill the cache, run python -c \"import timm; timm.create_model('{timm_name}', "
        f"pretrained=True)\" on a connected machine)"
    )


def _cached_hub_weights(timm_name: str) -> tuple[str | None, str | None]:
    """The Hugging Face hub id of timm's default pretrained weights for ``timm_name`` and their cached file.

    Returns:
        ``(hub_id, path)``: ``hub_id`` is ``None`` when timm has no hub weights for the model; ``path`` is the file in
        the local Hugging Face cache that timm would load (safetensors first, as timm does), or ``None``.
    """
    cfg = get_pretrained_cfg(timm_name)
    hub_id = getattr(cfg, "hf_hub_id", None)
    if not hub_id:
        return None, None
    repo_id, _, revision = hub_id.partition("@")
    filenames = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else ("model.safetensors", "pytorch_model.bin")
    for filename in filenames:
        path = try_to_load_from_cache(repo_id, filename, revision=revision or None)
        if isinstance(path, str):
            return hub_id, path
    return hub_id, None


def _unreachable(url: str, timeout: float = 1.0) -> str | None:
    """Why a TCP connection to ``url``'s host (or to the proxy the environment sets for it) fails, or ``None``.

    One connect with a ``timeout`` in seconds, instead of huggingface_hub's retries (about 45 s when offline).
    """
    parts, target = urlsplit(url), url
    proxies = getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if proxy and not proxy_bypass(parts.hostname or ""):
        parts, target = urlsplit(proxy if "://" in proxy else f"http://{proxy}"), f"{url} (through proxy {proxy})"
    try:
        socket.create_connection((parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)),
                                 timeout=timeout).close()
    except OSError as err:
        return f"{target} is unreachable ({err.strerror or str(err) or type(err).__name__})"
    return None


# Wrappers around a state dict: a Lightning / training checkpoint's ``state_dict``, a timm / DeiT-style ``model``.
_WRAPPER_KEYS = ("state_dict", "model")
# Prefixes stripped when every key carries one: DistributedDataParallel's ``module.``, a training script's
# ``model.``, a detection / segmentation codebase's backbone-only export ``backbone.``.
_PREFIXES = ("module.", "model.", "backbone.")
# Parts of the features model that are not weights: a BatchNorm's step counter (old torchvision files lack it).
_OPTIONAL_SUFFIXES = (".num_batches_tracked",)
_FEATURES_ONLY_KWARGS = ("feature_location",)  # timm kwargs the full (classification) model does not take
_SHOWN = 3  # key names quoted per kind of mismatch


def _read_error(err: Exception) -> str:
    """One line saying why ``torch.load(weights_only=True)`` or safetensors could not read a file."""
    text = str(err)
    if isinstance(err, TypeError) and text.startswith("it holds"):  # from _read_state_dict
        return text
    if isinstance(err, pickle.UnpicklingError) and "Weights only load failed" in text:
        reason = re.search(r"WeightsUnpickler error:\s*(.+)", text)  # e.g. "Unsupported global: GLOBAL x.Y was..."
        detail = reason.group(1).split(" was not an allowed")[0] if reason else "unknown object"
        return (f"it holds more than tensors or is no PyTorch file ({detail}); it is read with "
                f"torch.load(weights_only=True), which never runs code from a file: save the model's state_dict()")
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """The tensors in ``path``, unwrapped from ``state_dict`` / ``model`` and stripped of a prefix all keys share.

    Raises:
        OSError, RuntimeError, ValueError, pickle.UnpicklingError, safetensors' error: the file cannot be read.
        TypeError: it holds no ``{name: tensor}`` dict.
    """
    if path.suffix == ".safetensors":
        state: Any = safetensors.torch.load_file(path, device="cpu")
    else:
        # weights_only=True: a checkpoint must never run code. A full pickle (an nn.Module, a Lightning checkpoint
        # with hyperparameter objects) is refused instead of executed.
        state = torch.load(path, map_location="cpu", weights_only=True)
    while isinstance(state, dict) and (wrapper := next((k for k in _WRAPPER_KEYS if isinstance(state.get(k), dict)),
                                                       None)):
        state = state[wrapper]
    if not isinstance(state, dict) or not state:
        raise TypeError(f"it holds {'an empty dict' if isinstance(state, dict) else 'a ' + type(state).__name__}, "
                        f"not a state dict (a dict of names to tensors)")
    if not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise TypeError(f"it holds a dict of more than tensors (keys {_first([str(k) for k in state])}), not a "
                        f"state dict")
    while prefix := next((p for p in _PREFIXES if all(k.startswith(p) for k in state)), None):
        state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _full_model_keys(backbone: nn.Module, full: nn.Module) -> dict[str, str]:
    """Map each state-dict key of a timm ``features_only`` model to the key of the full model it came from.

    timm's feature wrappers flatten a sequential stage into one module named by joining with ``_`` (Swin's
    ``layers.0.blocks...`` becomes ``layers_0.blocks...``); checkpoints use the full model's names.
    """
    full_keys = set(full.state_dict())
    mapping = {}
    for key in backbone.state_dict():
        head, dot, rest = key.partition(".")
        candidates = [key] + [f"{head[:i]}.{head[i + 1:]}{dot}{rest}" for i, c in enumerate(head) if c == "_"]
        mapping[key] = next((c for c in candidates if c in full_keys), key)
    return mapping


def _first(keys: list[str]) -> str:
    return ", ".join(keys[:_SHOWN]) + (", ..." if len(keys) > _SHOWN else "")


def _load_checkpoint(
    backbone: nn.Module, timm_name: str, kwargs: dict[str, Any], in_chans: int, state: dict[str, Tensor],
) -> str | None:
    """Copy ``state`` (a full timm / torchvision state dict of ``timm_name``) into a ``features_only`` ``backbone``.

    The state dict goes through timm's checkpoint filter for the model's family where it has one (Swin: original
    checkpoints' layout, relative-position tables for another window size) and timm's input-conv adaptation when
    ``in_chans`` is not 3, as ``timm.create_model(pretrained=True)`` does. Unlike timm, which loads
    ``features_only`` models non-strictly and only logs what is missing, every parameter and buffer of the backbone
    must be in the file with its shape. The only extra keys accepted are those of timm's full model that
    ``features_only`` drops (the classifier ``fc`` / ``head`` / ``classifier``, whatever its number of classes,
    Swin's final norm, HRNet's ``incre_modules`` / ``downsamp_modules`` / ``final_layer``); any other extra is an
    error even when nothing is missing: it means another architecture (a resnet34 file has every resnet18 key, with
    its shape, and ``layer1.2`` besides) or a wrapper we do not unwrap.

    Returns:
        ``None`` when the weights were copied, else a one-line description of the mismatch.
    """
    with torch.device("meta"):  # names, shapes and window sizes only: no memory, no initialisation
        full = timm.create_model(timm_name, in_chans=in_chans,
                                 **{k: v for k, v in kwargs.items() if k not in _FEATURES_ONLY_KWARGS})
    filter_fn = timm_checkpoint_filter(timm_name)
    state, filter_error = dict(state), ""
    if filter_fn is not None:
        try:
            state = filter_fn(state, full)
        except Exception as err:  # noqa: BLE001 - e.g. a table for a block this model lacks: the keys will differ
            filter_error = f"timm's checkpoint filter failed ({type(err).__name__}: {err})".splitlines()[0]
    first_conv = backbone.pretrained_cfg.get("first_conv") or ()
    for conv in (first_conv,) if isinstance(first_conv, str) else first_conv:
        weight = state.get(f"{conv}.weight")
        if in_chans != 3 and weight is not None and weight.ndim == 4 and weight.shape[1] == 3:
            state[f"{conv}.weight"] = adapt_input_conv(in_chans, weight)  # as timm: summed (1) or repeated (N)

    names = _full_model_keys(backbone, full)  # features key -> file key
    own = backbone.state_dict()
    required = [k for k in own if not k.endswith(_OPTIONAL_SUFFIXES)]
    missing = [names[k] for k in required if names[k] not in state]
    mismatched = [f"{names[k]} (file {tuple(state[names[k]].shape)}, model {tuple(v.shape)})"
                  for k, v in own.items() if names[k] in state and state[names[k]].shape != v.shape]
    accepted = set(full.state_dict()) | set(names.values())  # the backbone's keys and what features_only drops
    unexpected = [k for k in state if k not in accepted]
    if missing or mismatched or unexpected:
        problems = [f"{len(missing)} of {len(required)} expected keys missing ({_first(missing)})" if missing else "",
                    f"{len(mismatched)} shape mismatches ({_first(mismatched)})" if mismatched else "",
                    f"{len(unexpected)} unexpected keys ({_first(unexpected)})" if unexpected else "", filter_error]
        return "; ".join(p for p in problems if p)
    backbone.load_state_dict({k: state.get(names[k], v) for k, v in own.items()})  # strict: every key given
    return None


class Encoder(nn.Module):
    """A timm backbone returning multi-stage NCHW features, fine to coarse.

    Args:
        name: a registered name (see :func:`list_encoders`), e.g. ``"resnet50"``, ``"hrnet_w48"``, ``"swin_tiny"``.
        pretrained: load timm's pretrained weights: from the Hugging Face cache when they are there (no request),
            else downloaded unless ``HF_HUB_OFFLINE`` is set or a one-second probe finds the hub unreachable.
        checkpoint_path: load weights from this local file instead: a timm / torchvision state dict of the full
            model (its classifier is ignored) or of the backbone, possibly inside a ``state_dict`` / ``model`` entry
            and under a ``module.`` / ``model.`` / ``backbone.`` prefix; ``.safetensors`` or a PyTorch file read
            with ``weights_only=True``. timm's own filters adapt it (Swin's original checkpoints), and every
            backbone weight must be there with its shape (see ``_load_checkpoint``).
        output_stride: 8, 16 or 32; dilates the last stages of ResNets (8 for DeepLabv3 / the paper's setups).
        in_chans: number of input channels.
        drop_path_rate: stochastic depth for transformer backbones (``None`` keeps timm's default).

    Raises:
        ConfigError: unknown name, unsupported output stride, or weights that cannot be loaded or do not fit.
    """

    def __init__(
        self,
        name: str = "resnet18",
        *,
        pretrained: bool = False,
        checkpoint_path: str | None = None,
        output_stride: int | None = None,
        in_chans: int = 3,
        drop_path_rate: float | None = None,
    ) -> None:
        super().__init__()
        if name not in ENCODERS:
            raise ConfigError(f"unknown encoder name {name!r}; known encoders: {', '.join(list_encoders())}")
        spec = ENCODERS[name]
        kwargs = dict(spec.kwargs)
        if output_stride not in (None, 32):
            if not spec.dilatable or output_stride not in (8, 16):
                allowed = "8, 16 or 32" if spec.dilatable else "32 (not dilatable)"
                raise ConfigError(f"encoder {name!r}: output_stride={output_stride} not supported; use {allowed}")
            kwargs["output_stride"] = output_stride
        if drop_path_rate is not None:
            kwargs["drop_path_rate"] = drop_path_rate
        state = None
        if checkpoint_path is not None:
            path = Path(checkpoint_path).expanduser()
            if not path.is_file():
                raise ConfigError(f"encoder {name!r}: {_CHECKPOINT_KEY} {str(path)!r} does not exist")
            advice = f"Set {_CHECKPOINT_KEY} to a timm / torchvision state dict of {spec.timm_name!r}"
            try:  # read before building the model, so that a wrong file fails at once
                state = _read_state_dict(path)
            except Exception as err:  # noqa: BLE001 - any unreadable file (pickle, zip, safetensors, I/O) is reported
                raise ConfigError(f"encoder {name!r} (timm {spec.timm_name!r}): could not load file {str(path)!r}: "
                                  f"{_read_error(err)}. {advice}") from err
            pretrained = False  # loaded below, key by key (timm would load it non-strictly)
        elif pretrained:
            hub_id, cached = _cached_hub_weights(spec.timm_name)
            if cached:  # loaded as a local file: huggingface_hub would ask the hub for a newer revision first
                kwargs["pretrained_cfg_overlay"] = {"file": cached}
            elif hub_id:
                offline = "HF_HUB_OFFLINE is set" if hf_constants.HF_HUB_OFFLINE else None
                why = offline or _unreachable(hf_constants.ENDPOINT)
                if why:
                    raise ConfigError(
                        f"encoder {name!r} (timm {spec.timm_name!r}): could not load timm's pretrained weights "
                        f"{hub_id!r}: they are not in the Hugging Face cache {hf_constants.HF_HUB_CACHE} and {why}. "
                        f"{_pretrained_advice(spec.timm_name)}"
                    )
        try:
            self.backbone = timm.create_model(
                spec.timm_name, pretrained=pretrained, features_only=True, out_indices=spec.out_indices,
                in_chans=in_chans, **kwargs,
            )
        except (OSError, RuntimeError, ValueError) as err:  # hub offline, bad cached file
            if not pretrained:
                raise
            raise ConfigError(
                f"encoder {name!r} (timm {spec.timm_name!r}): could not load timm's pretrained weights: "
                f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}. "
                f"{_pretrained_advice(spec.timm_name)}"
            ) from err
        if state is not None:
            mismatch = _load_checkpoint(self.backbone, spec.timm_name, kwargs, in_chans, state)
            if mismatch:
                raise ConfigError(f"encoder {name!r} (timm {spec.timm_name!r}): file {str(path)!r} "
                                  f"({_CHECKPOINT_KEY}) does not fit the model: {mismatch}. {advice}")
        self.name = name
        self.pad_to = spec.pad_to
        self.channels: tuple[int, ...] = tuple(self.backbone.feature_info.channels())
        self.strides: tuple[int, ...] = tuple(self.backbone.feature_info.reduction())
        # The segmentation Swin (Swin-Transformer-Semantic-Segmentation, mmseg) normalises every output stage with
        # a LayerNorm of its own; timm's feature maps are the raw residual stream (its one norm follows the last
        # stage of the classifier). Identity at initialisation, trained with the decoder.
        self.norms = nn.ModuleList(nn.LayerNorm(c) for c in self.channels) if spec.nhwc else None

    def forward(self, image: Tensor) -> list[Tensor]:
        """Return one feature map per stage: ``[(B, channels[i], ceil(H/strides[i]), ceil(W/strides[i]))]``."""
        h, w = image.shape[-2:]
        pad_h, pad_w = -h % self.pad_to, -w % self.pad_to
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h))  # (B, 3, H, W) -> (B, 3, H + pad_h, W + pad_w)
        features = self.backbone(image)
        if self.norms is not None:  # (B, h, w, C) -> (B, C, h, w), each stage layer-normalised over C first
            features = [norm(f).permute(0, 3, 1, 2).contiguous() for norm, f in zip(self.norms, features)]
        if pad_h or pad_w:
            features = [f[..., : -(-h // s), : -(-w // s)] for f, s in zip(features, self.strides)]
        return list(features)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, channels={self.channels}, strides={self.strides}"

