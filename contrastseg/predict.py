"""``contrastseg predict-folder``: colourised masks (and overlays) for a folder of images, from a checkpoint.

    contrastseg predict-folder runs/.../best.ckpt my_images/ predictions/ --overlay
    contrastseg predict-folder best.ckpt imgs/ out/ --eval '{mode: slide, crop_size: [512, 1024], flip: true}'

Images are read on their raw pixel grid (an EXIF orientation tag is ignored, as in training), so every output
lines up with its image file's pixels; hidden files (``.*``, such as macOS's ``._<name>``) are skipped. For every
image it writes ``<stem>_labels.png`` (class indices), ``<stem>_color.png`` (the dataset palette) and
with ``--overlay`` ``<stem>_overlay.jpg`` (prediction blended over the image). The palette comes from the data
module the checkpoint was trained with (a fixed palette otherwise); evaluation options as ``model.evaluation``.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml

from contrastseg.callbacks.checkpoint import check_checkpoint
from contrastseg.data.dataset import default_palette
from contrastseg.data.files import is_hidden, read_image
from contrastseg.data.folder import IMAGE_SUFFIXES
from contrastseg.data.transforms import to_tensors
from contrastseg.errors import ContrastSegError, DataError
from contrastseg.evaluation.inference import EvalConfig
from contrastseg.models.segmentation import predict_classes
from contrastseg.module import ContrastSegModule
from contrastseg.viz.masks import colourise
from contrastseg.viz.masks import overlay as overlay_labels

__all__ = ["main", "predict_folder"]


def predict_folder(checkpoint: str | Path, images: str | Path, output: str | Path, *, overlay: bool = False,
                   alpha: float = 0.5, evaluation: EvalConfig | None = None, device: str | None = None) -> list[Path]:
    """Predict every image of ``images`` and write label, colour (and overlay) files to ``output``."""
    checkpoint, images, output = Path(checkpoint), Path(images), Path(output)
    check_checkpoint(checkpoint)  # missing, empty, truncated or code-carrying files: one line naming the file
    if not images.is_dir():
        raise DataError(f"image folder {images} does not exist")
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not is_hidden(p))
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {images}")
    stems = Counter(p.stem for p in files)
    twice = sorted(p.name for p in files if stems[p.stem] > 1)
    if twice:  # their outputs would overwrite each other
        raise DataError(f"images in {images} share a name and would write the same outputs: {', '.join(twice[:6])}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    module = ContrastSegModule.load_from_checkpoint(checkpoint, map_location=device, weights_only=True).eval()
    if evaluation is not None:
        module.evaluation = evaluation
    palette = np.asarray(module.palette or default_palette(module.num_classes), dtype=np.uint8)
    output.mkdir(parents=True, exist_ok=True)
    written = []
    with torch.no_grad():
        for path in files:
            image = read_image(path)
            x, _ = to_tensors(image, np.zeros(image.shape[:2], np.uint8))
            scores = module.predict_scores(x[None].to(module.device))
            labels = predict_classes(scores, image.shape[:2])[0].cpu().numpy()
            labels = labels.astype(np.uint8 if module.num_classes <= 256 else np.uint16)  # PNG: 8 or 16 bits
            colour = colourise(labels, palette)
            cv2.imwrite(str(output / f"{path.stem}_labels.png"), labels)
            cv2.imwrite(str(output / f"{path.stem}_color.png"), cv2.cvtColor(colour, cv2.COLOR_RGB2BGR))
            written.append(output / f"{path.stem}_color.png")
            if overlay:
                blend = overlay_labels(image, labels, palette, alpha=alpha)
                cv2.imwrite(str(output / f"{path.stem}_overlay.jpg"), cv2.cvtColor(blend, cv2.COLOR_RGB2BGR))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """``contrastseg predict-folder CKPT IMAGES OUT [--overlay] [--eval YAML]``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="contrastseg predict-folder", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("images")
    parser.add_argument("output")
    parser.add_argument("--overlay", action="store_true")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--eval", default=None, help="YAML of EvalConfig, e.g. '{mode: slide, crop_size: [512, 512]}'")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    try:
        evaluation = EvalConfig(**yaml.safe_load(args.eval)) if args.eval else None
        written = predict_folder(args.checkpoint, args.images, args.output, overlay=args.overlay, alpha=args.alpha,
                                 evaluation=evaluation, device=args.device)
    except (ContrastSegError, ValueError, TypeError) as err:
        print(f"contrastseg: error: {str(err).replace('model.evaluation', '--eval')}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} prediction(s) to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
