"""Built-in procedurally generated street-like scenes: the quickstart's data, no download.

Every scene is drawn from ``numpy.random.default_rng((seed, split, index))``, so item ``i`` of a split is the same
on every machine and in every worker, and nothing is stored on disk. The scenes are designed so that neither colour
nor a small receptive field is enough:

* every region's colour is drawn from the same distribution, whatever its class, so the class is in the
  *texture* (smooth, blocky noise, vertical stripes, checks, horizontal stripes, dots) and the *shape*;
* ``sky`` and ``water`` have identical texture and colour statistics: only global context (above or below the
  horizon, surrounded by ground) tells them apart;
* large background regions (sky, ground), medium objects (buildings, cars, water), small objects (people, poles)
  and a rare tiny class (signs, in about a third of the scenes).
"""

from __future__ import annotations

import numpy as np

__all__ = ["SYNTHETIC_CLASSES", "SYNTHETIC_PALETTE", "render_scene"]

SYNTHETIC_CLASSES: tuple[str, ...] = ("sky", "ground", "water", "building", "car", "person", "pole", "sign")
SYNTHETIC_PALETTE: tuple[tuple[int, int, int], ...] = (
    (70, 130, 180), (128, 64, 128), (0, 80, 160), (70, 70, 70),
    (0, 0, 142), (220, 20, 60), (153, 153, 153), (220, 220, 0),
)
SKY, GROUND, WATER, BUILDING, CAR, PERSON, POLE, SIGN = range(len(SYNTHETIC_CLASSES))


def _texture(kind: str, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """A zero-mean pattern in [-1, 1] over the grid; the texture, not the colour, identifies a class."""
    h, w = yy.shape
    if kind == "smooth":  # a gentle vertical gradient
        return (yy / h - 0.5) * rng.uniform(0.8, 1.6)
    if kind == "blocks":  # coarse random blocks, upsampled by repetition
        cell = int(rng.integers(4, 9))
        grid = rng.uniform(-1, 1, size=(h // cell + 2, w // cell + 2))
        return grid[(yy // cell).astype(int), (xx // cell).astype(int)]
    period = rng.uniform(4.0, 8.0)
    phase = rng.uniform(0, 2 * np.pi)
    if kind == "vstripes":
        return np.sign(np.sin(2 * np.pi * xx / period + phase))
    if kind == "hstripes":
        return np.sign(np.sin(2 * np.pi * yy / period + phase))
    if kind == "checks":
        return np.sign(np.sin(2 * np.pi * xx / period + phase) * np.sin(2 * np.pi * yy / period))
    if kind == "dots":
        return (np.sin(2 * np.pi * xx / 3.0) * np.sin(2 * np.pi * yy / 3.0) > 0.5) * 2.0 - 1.0
    raise ValueError(kind)


_TEXTURE = {SKY: "smooth", WATER: "smooth", GROUND: "blocks", BUILDING: "vstripes", CAR: "checks",
            PERSON: "hstripes", POLE: "smooth", SIGN: "dots"}


def _paint(image: np.ndarray, label: np.ndarray, region: np.ndarray, cls: int, rng: np.random.Generator,
           yy: np.ndarray, xx: np.ndarray) -> None:
    """Fill ``region`` with a random colour modulated by the class's texture, and label it ``cls``."""
    colour = rng.uniform(40, 215, size=3)
    contrast = rng.uniform(25, 45) * rng.choice([-1.0, 1.0], size=3)
    pattern = _texture(_TEXTURE[cls], rng, yy, xx)
    image[region] = colour + pattern[region][:, None] * contrast
    label[region] = cls


def render_scene(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw one scene.

    Args:
        rng: the generator; the scene is a pure function of its state.
        height: image height in pixels (64 or more).
        width: image width in pixels (64 or more).

    Returns:
        ``image`` ``(height, width, 3)`` uint8 RGB and ``mask`` ``(height, width)`` uint8 with values in
        ``0..len(SYNTHETIC_CLASSES)-1``.
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.zeros((height, width, 3), np.float32)
    label = np.zeros((height, width), np.uint8)

    # Horizon: a gently waving line between 30% and 55% of the height.
    horizon = height * rng.uniform(0.3, 0.55) + height * 0.04 * np.sin(
        2 * np.pi * xx / width * rng.uniform(0.5, 1.5) + rng.uniform(0, 2 * np.pi))
    _paint(image, label, yy < horizon, SKY, rng, yy, xx)
    _paint(image, label, yy >= horizon, GROUND, rng, yy, xx)
    h0 = float(horizon.mean())

    for _ in range(rng.integers(0, 3)):  # water: same look as the sky, but lies in the ground
        cy, cx = rng.uniform(h0 + 0.15 * height, 0.95 * height), rng.uniform(0, width)
        ry, rx = rng.uniform(0.04, 0.1) * height, rng.uniform(0.1, 0.25) * width
        _paint(image, label, (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1) & (yy > horizon + 2), WATER,
               rng, yy, xx)
    for _ in range(rng.integers(1, 5)):  # buildings stand on the horizon
        x0, bw = rng.uniform(-0.1, 0.9) * width, rng.uniform(0.1, 0.3) * width
        top = h0 - rng.uniform(0.1, 0.3) * height
        _paint(image, label, (xx >= x0) & (xx < x0 + bw) & (yy >= top) & (yy < horizon + 0.02 * height),
               BUILDING, rng, yy, xx)
    for _ in range(rng.integers(0, 3)):  # poles, with a sign on top in a third of the scenes
        x0, pw = rng.uniform(0.05, 0.95) * width, max(2.0, 0.015 * width)
        base, top = rng.uniform(h0 + 0.05 * height, 0.9 * height), h0 - rng.uniform(0.0, 0.2) * height
        _paint(image, label, (xx >= x0) & (xx < x0 + pw) & (yy >= top) & (yy < base), POLE, rng, yy, xx)
        if rng.uniform() < 0.35:
            r = max(2.5, rng.uniform(0.025, 0.04) * height)
            _paint(image, label, (yy - top) ** 2 + (xx - x0 - pw / 2) ** 2 < r * r, SIGN, rng, yy, xx)
    for _ in range(rng.integers(0, 4)):  # cars on the ground, larger when closer (lower)
        cy = rng.uniform(h0 + 0.1 * height, 0.95 * height)
        s = 0.5 + (cy - h0) / height
        cw, ch = rng.uniform(0.12, 0.22) * width * s, rng.uniform(0.07, 0.12) * height * s
        cx = rng.uniform(0, width)
        _paint(image, label, (np.abs(xx - cx) < cw / 2) & (yy <= cy) & (yy > cy - ch), CAR, rng, yy, xx)
    for _ in range(rng.integers(0, 4)):  # people: tall thin ellipses standing on the ground
        cy = rng.uniform(h0 + 0.05 * height, 0.95 * height)
        s = 0.5 + (cy - h0) / height
        ry, rx = rng.uniform(0.06, 0.1) * height * s, max(2.0, rng.uniform(0.015, 0.03) * width * s)
        cx = rng.uniform(0, width)
        _paint(image, label, ((yy - cy + ry) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1, PERSON, rng, yy, xx)

    image *= rng.uniform(0.8, 1.2)  # global illumination
    image += rng.normal(0.0, 6.0, size=image.shape)  # sensor noise
    return np.clip(image, 0, 255).astype(np.uint8), label
