"""Regenerate the documentation's figures (``docs/figures/``) by executing the notebooks with larger settings.

    CONTRASTSEG_CAMVID=/data/camvid python docs/make_figures.py                       # all figures (about 10 min, 2 CPU cores)
    CONTRASTSEG_CAMVID=/data/camvid python docs/make_figures.py 02_anchor_sampling    # one notebook

Each notebook's ``parameters`` cell is kept and the overrides below are appended to it, so the figures come from
exactly the code users run; ``FIGURE_DIR`` points at ``docs/figures/``. The text the notebooks print (the tables
behind the figures) is printed too. Needs the ``notebooks`` extra and, for the anchor figure, CamVid in SegNet's
layout (``train/``, ``trainannot/``, ``val/``, ``valannot/``) at ``CONTRASTSEG_CAMVID``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbclient
import nbformat
import numpy as np
from PIL import Image

from contrastseg.data.camvid import CamVidDataset
from contrastseg.data.synthetic import SYNTHETIC_PALETTE

DOCS = Path(__file__).resolve().parent
FIGURES = DOCS / "figures"
NOTEBOOKS = DOCS.parent / "notebooks"

OVERRIDES = {
    "02_anchor_sampling": {"DATA": "camvid", "BATCH_SIZE": 4, "SHOW_IMAGE": 1},
    "03_feature_space": {"EPOCHS": 15, "NUM_TRAIN": 512, "NUM_VAL": 64, "IMAGE_SIZE": 128, "PER_CLASS": 200,
                         "NUM_BATCHES": 4},
}


def render(name: str, overrides: dict) -> None:
    book = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    cell = next(c for c in book.cells if "parameters" in c.metadata.get("tags", []))
    settings = {**overrides, "FIGURE_DIR": str(FIGURES)}
    if overrides.get("DATA") == "camvid":
        if "CONTRASTSEG_CAMVID" not in os.environ:
            raise SystemExit(f"{name}: set CONTRASTSEG_CAMVID to CamVid in SegNet's layout (train/, trainannot/, ...)")
        settings["CAMVID_ROOT"] = str(Path(os.environ["CONTRASTSEG_CAMVID"]).resolve())
    cell.source += "\n# make_figures.py overrides\n" + "\n".join(f"{k} = {v!r}" for k, v in settings.items())
    nbclient.NotebookClient(book, timeout=3600, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    for cell in book.cells:  # the numbers behind the figures
        for output in cell.get("outputs", []):
            text = output.get("text") or output.get("data", {}).get("text/plain")
            if text and output.get("name") != "stderr":
                print(text if isinstance(text, str) else "".join(text))
    for png in FIGURES.glob("*.png"):  # a 256-colour palette keeps the committed PNGs small
        image = Image.open(png)
        if image.mode != "P":
            quantize(image).save(png, optimize=True)
    print(f"{name}: figures written to {FIGURES}")


def quantize(image: Image.Image) -> Image.Image:
    """256 colours that include every class colour, black and white exactly: a plain median cut over a figure that
    is mostly photo merges the few pixels of each class colour into photo tones (CamVid's building came out near
    black). Pixels go to their nearest palette colour, computed here (PIL's own mapping is approximate)."""
    image = image.convert("RGB")
    rgb = np.asarray(image)
    fixed = sorted({c for palette in (CamVidDataset.palette, SYNTHETIC_PALETTE) for c in palette}
                   | {(0, 0, 0), (255, 255, 255)})
    adaptive = image.quantize(256 - len(fixed), dither=Image.Dither.NONE).getpalette()
    palette = np.asarray([*fixed, *np.asarray(adaptive).reshape(-1, 3)[: 256 - len(fixed)]], dtype=np.int64)
    colours, inverse = np.unique(rgb.reshape(-1, 3), axis=0, return_inverse=True)  # (U, 3), (H*W,)
    nearest = np.concatenate([((c[:, None, :].astype(np.int64) - palette[None]) ** 2).sum(-1).argmin(1)
                              for c in np.array_split(colours, max(1, len(colours) // 4096))])  # (U,)
    out = Image.fromarray(nearest[inverse.reshape(-1)].reshape(rgb.shape[:2]).astype(np.uint8), "P")
    out.putpalette(palette.astype(np.uint8).ravel().tolist())
    return out


if __name__ == "__main__":
    for name in sys.argv[1:] or OVERRIDES:
        render(name, OVERRIDES.get(name, {}))
