"""Decoding image and label files on their raw pixel grid, and which files of a folder are data.

Images and labels are decoded as stored: an EXIF orientation tag is ignored for both (as mmsegmentation does).
OpenCV's default applies it to images only, so a phone photo tagged "rotated 180°" (same size) would be silently
misaligned with its label.

Label files hold class indices: grey PNGs (8 or 16 bits, values kept), 1/2/4-bit grey PNGs (0/1 for a 1-bit
file, not the 0/255 that decoders scale them to) and palette PNGs (the palette indices, as VOC and ADE tools write
them); TIFF and BMP single-channel maps as OpenCV reads them. A colour (RGB/RGBA) label map is an error naming the
file. JPEG label files are refused unless allowed: lossy compression invents class values near every edge.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from contrastseg.errors import DataError

__all__ = ["is_hidden", "read_image", "read_mask"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
EXPECTED_LABELS = "class-index PNGs (grey 8/16-bit, 1-bit or palette) are expected"
JPEG_OPTION = "data.init_args.allow_jpeg_labels"
# PNG colour types (IHDR byte 25) that cannot hold class indices in one channel.
_COLOUR_TYPES = {2: "a colour image (RGB PNG)", 4: "a grey image with an alpha channel", 6: "a colour image (RGBA PNG)"}


def is_hidden(path: Path) -> bool:
    """Whether ``path`` is a hidden file (name starting with ``.``), e.g. macOS's ``._<name>`` AppleDouble metadata."""
    return path.name.startswith(".")


def _read_bytes(path: Path, what: str) -> np.ndarray:
    try:
        return np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise DataError(f"cannot read {what} {path} ({err.strerror or err})") from err


def read_image(path: Path) -> np.ndarray:
    """Decode an image file to ``(H, W, 3)`` uint8 RGB on its raw pixel grid; :class:`DataError` names a bad file.

    Decoded from the file's bytes with ``cv2.imdecode``, which rejects a JPEG cut short: ``cv2.imread`` returns
    one with the missing rows grey and only prints a warning that names no file, so it would train silently. The
    EXIF orientation is ignored, as for the label (:func:`read_mask`), so image and label pixels stay aligned.
    """
    data = _read_bytes(path, "image")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) if data.size else None
    if image is None:
        raise DataError(f"cannot decode image {path} (corrupt, truncated or not an image)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _palette_indices(data: np.ndarray, path: Path) -> np.ndarray:
    """A palette PNG's indices ``(H, W)`` uint8 (OpenCV would expand them to the palette's colours)."""
    try:
        with Image.open(io.BytesIO(data.tobytes())) as image:
            mode, indices = image.mode, np.array(image)
    except (OSError, SyntaxError, ValueError, EOFError) as err:  # what Pillow raises for a corrupt file
        raise DataError(f"cannot decode label {path} (corrupt or truncated palette PNG: {err})") from err
    if mode != "P":
        raise DataError(f"label {path} is a palette PNG that decodes as mode {mode!r}; {EXPECTED_LABELS}")
    return indices


def read_mask(path: Path, *, allow_jpeg: bool = False) -> np.ndarray:
    """Decode a label file to ``(H, W)`` class indices on its raw pixel grid (EXIF orientation ignored).

    Grey PNGs keep their values (uint8 or uint16); 1/2/4-bit grey PNGs give their stored values (0/1 for 1-bit);
    palette PNGs give their palette indices. Plain grey files are decoded with OpenCV, palette files with Pillow.

    Args:
        path: the label file.
        allow_jpeg: accept JPEG label files (detected from the bytes, whatever the suffix).

    Raises:
        DataError: naming the file when it is missing or corrupt, a colour image, or a JPEG and not allowed.
    """
    data = _read_bytes(path, "label")
    head = data[:26].tobytes()
    if head.startswith(JPEG_SIGNATURE) and not allow_jpeg:
        raise DataError(f"label {path} is a JPEG file: lossy compression turns class values near edges into other "
                        f"valid classes; save labels as PNG, or set {JPEG_OPTION}: true to accept them")
    depth = 8
    if head.startswith(PNG_SIGNATURE) and head[12:16] == b"IHDR":  # IHDR is the first chunk; bytes 24/25 of the file
        depth, colour_type = head[24], head[25]  # are the bit depth and the colour type
        if colour_type in _COLOUR_TYPES:
            raise DataError(f"label {path} is {_COLOUR_TYPES[colour_type]}; {EXPECTED_LABELS}, one class index per "
                            "pixel")
        if colour_type == 3:
            return _palette_indices(data, path)
    # IMREAD_UNCHANGED keeps 16 bits and ignores the EXIF orientation.
    mask = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if mask is None:
        raise DataError(f"cannot decode label {path} (missing, corrupt or not an image)")
    if mask.ndim != 2:
        raise DataError(f"label {path} is a colour image ({mask.shape[2]} channels); {EXPECTED_LABELS}, "
                        "one class index per pixel")
    if depth < 8:  # libpng scales 1/2/4-bit grey to 0..255 (x255, x85, x17): back to the stored values
        mask //= 255 // (2**depth - 1)
    return mask
