"""Test-time inference: whole image, sliding windows, and multi-scale + flip (the paper's TTA).

Functional and model-agnostic: ``logits_fn(images) -> (B, K, h, w)`` logits at any resolution (they are resized to
the window). Windows are batched; scores are accumulated at the target size, so memory is bounded by one
``(K, H, W)`` accumulator per image plus one batch of windows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastseg.errors import ConfigError
from contrastseg.ops import resize

__all__ = ["ADE20K_SCALES", "CITYSCAPES_SCALES", "EvalConfig", "infer", "multiscale_flip_inference",
           "slide_inference"]

LogitsFn = Callable[[Tensor], Tensor]
ADE20K_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
CITYSCAPES_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)  # also Pascal-Context


@dataclass
class EvalConfig:
    """How ``validate`` / ``test`` / ``predict`` turn images into class scores.

    Attributes:
        mode: ``"whole"`` (one forward pass), ``"slide"`` (windows of ``crop_size`` every ``stride``).
        crop_size: sliding-window size ``(h, w)`` (Cityscapes: 512x1024 on 1024x2048 images).
        stride: window step ``(h, w)``; ``None``: two thirds of the crop.
        scales: image scales for TTA (``(1.0,)``: none; the paper's sets are ``ADE20K_SCALES`` and
            ``CITYSCAPES_SCALES``).
        flip: add horizontally flipped passes (undone before averaging).
        window_batch: windows per forward pass.
    """

    mode: str = "whole"
    crop_size: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    window_batch: int = 4

    def __post_init__(self) -> None:
        """Reject settings that would crash later or leave pixels without a score (the message names the key)."""
        key = "model.evaluation"
        if self.mode not in ("whole", "slide"):
            raise ConfigError(f"{key}.mode must be 'whole' or 'slide', got {self.mode!r}")
        pairs = {"crop_size": self.crop_size, "stride": self.stride}
        for name, value in pairs.items():
            if value is not None and (len(value) != 2 or min(value) < 1):
                raise ConfigError(f"{key}.{name} must be two positive integers (h, w), got {list(value)}")
        if self.mode == "slide" and self.crop_size is None:
            raise ConfigError(f"{key}.mode 'slide' needs {key}.crop_size")
        if self.crop_size is not None and self.stride is not None and any(
                s > c for s, c in zip(self.stride, self.crop_size)):
            raise ConfigError(f"{key}.stride {list(self.stride)} is larger than {key}.crop_size "
                              f"{list(self.crop_size)}: pixels between the windows would get no score")
        if not self.scales or min(self.scales) <= 0:
            raise ConfigError(f"{key}.scales must be one or more positive factors, got {list(self.scales)}")
        if self.window_batch < 1:
            raise ConfigError(f"{key}.window_batch must be at least 1, got {self.window_batch}")


@torch.no_grad()
def slide_inference(logits_fn: LogitsFn, images: Tensor, num_classes: int, crop_size: Sequence[int],
                    stride: Sequence[int] | None = None, window_batch: int = 4) -> Tensor:
    """Average window logits over a grid covering the image (images smaller than the crop are padded).

    Returns:
        ``(B, K, H, W)`` logits at the images' size.
    """
    b, _, h, w = images.shape
    ch, cw = int(crop_size[0]), int(crop_size[1])
    sh, sw = (int(s) for s in (stride or (max(1, ch * 2 // 3), max(1, cw * 2 // 3))))
    pad_h, pad_w = max(ch - h, 0), max(cw - w, 0)
    padded = F.pad(images, (0, pad_w, 0, pad_h))  # (B, 3, H, W) -> (B, 3, max(H, ch), max(W, cw))
    ph, pw = padded.shape[-2:]
    ys = [min(y * sh, ph - ch) for y in range(math.ceil(max(ph - ch, 0) / sh) + 1)]
    xs = [min(x * sw, pw - cw) for x in range(math.ceil(max(pw - cw, 0) / sw) + 1)]
    boxes = sorted({(y, x) for y in ys for x in xs})
    scores = images.new_zeros(b, num_classes, ph, pw)
    counts = images.new_zeros(1, 1, ph, pw)
    per_pass = max(1, window_batch // b)  # windows per forward pass (each holds the whole batch)
    for i in range(0, len(boxes), per_pass):
        chunk = boxes[i:i + per_pass]
        crops = torch.cat([padded[..., y:y + ch, x:x + cw] for y, x in chunk])  # (n*B, 3, ch, cw)
        logits = resize(logits_fn(crops).float(), (ch, cw)).view(len(chunk), b, num_classes, ch, cw)
        for (y, x), window in zip(chunk, logits):
            scores[..., y:y + ch, x:x + cw] += window
            counts[..., y:y + ch, x:x + cw] += 1
    return (scores / counts)[..., :h, :w]


@torch.no_grad()
def multiscale_flip_inference(logits_fn: LogitsFn, images: Tensor, num_classes: int, config: EvalConfig) -> Tensor:
    """Average softmax scores over ``config.scales`` (and flips), each pass whole-image or sliding.

    Returns:
        ``(B, K, H, W)`` averaged class probabilities at the images' size (plain logits for a single pass).
    """
    h, w = images.shape[-2:]
    passes = [(s, f) for s in config.scales for f in ((False, True) if config.flip else (False,))]
    total = None
    for scale, flip in passes:
        x = resize(images, (round(h * scale), round(w * scale)))
        if flip:
            x = x.flip(-1)
        if config.mode == "slide":
            out = slide_inference(logits_fn, x, num_classes, config.crop_size, config.stride, config.window_batch)
        else:
            out = logits_fn(x).float()
        out = resize(out, (h, w))
        if flip:
            out = out.flip(-1)  # undo the flip before averaging
        if len(passes) == 1:
            return out
        out = out.softmax(dim=1)
        total = out if total is None else total + out
    return total / len(passes)


def infer(logits_fn: LogitsFn, images: Tensor, num_classes: int, config: EvalConfig | None = None) -> Tensor:
    """Scores ``(B, K, H, W)`` at the images' size under ``config`` (whole image by default)."""
    config = config or EvalConfig()
    return multiscale_flip_inference(logits_fn, images, num_classes, config)
