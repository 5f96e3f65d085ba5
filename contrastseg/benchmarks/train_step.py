"""Training-step throughput and peak memory of each model family, with and without the contrastive terms.

    python -m contrastseg.benchmarks.train_step                   # CUDA if available: the paper's crops, batch 2 per GPU
    python -m contrastseg.benchmarks.train_step --scale 0.25      # scaled-down crops (CPU)
    python -m contrastseg.benchmarks.train_step --amp bf16        # forward and losses under bf16 autocast

Each row is one SGD step (forward, CE [+ multi-scale + cross-scale contrast], backward, update) on random images
with realistic Cityscapes-like labels, median of the repeats; the ratio column is what matters: the cost of adding
the paper's loss to that model. On CUDA each repeat times 3 steps back to back (``--consecutive``), as a training
loop runs them: the host queues a step while the device runs the previous one, so a host synchronisation inside
the step costs time that a per-step measurement would not show. The step is the module's default training step:
with the non-finite loss check (``--nonfinite raise``: BatchNorm state backed up, one host synchronisation).
Memory: the peak above the state after warm-up (weights, optimiser state and the last step's gradients), from
``max_memory_allocated`` on CUDA and the resident set on CPU (a fresh process whose freed memory goes back to the
system).
"""

from __future__ import annotations

import argparse

import torch

from contrastseg import ContrastSegModule
from contrastseg.benchmarks._harness import cpu_time_and_memory, timed
from contrastseg.callbacks import NonFiniteLossGuard
from contrastseg.losses import CrossEntropy, MultiScaleContrast
from contrastseg.models import DeepLabV3Head, Encoder, HRNetV2Head, OCRHead, SegmentationModel, UPerNetHead

FAMILIES = {  # name: (encoder, output stride, decoder, crop, contrast stages)
    "HRNetV2-W48": ("hrnet_w48", None, HRNetV2Head, (512, 1024), None),
    "OCRNet-HR48": ("hrnet_w48", None, OCRHead, (512, 1024), None),
    "DeepLabv3-R101": ("resnet101d", 8, DeepLabV3Head, (512, 1024), [0, 1, 3]),
    "UPerNet-R101": ("resnet101d", None, UPerNetHead, (512, 1024), None),
    "UPerNet-Swin-T": ("swin_tiny", None, UPerNetHead, (512, 512), None),
    "UPerNet-Swin-S": ("swin_small", None, UPerNetHead, (512, 512), None),
    "UPerNet-Swin-B": ("swin_base", None, UPerNetHead, (512, 512), None),
    "UPerNet-Swin-L": ("swin_large", None, UPerNetHead, (640, 640), None),
}


def _step_fn(family: str, contrast: bool, scale: float, batch: int, device: str, amp: str,
             nonfinite: str = "raise"):
    from contrastseg.benchmarks.contrastive_loss import realistic_labels

    enc, os_, dec, crop, stages = FAMILIES[family]
    h, w = int(crop[0] * scale) // 32 * 32, int(crop[1] * scale) // 32 * 32
    net = SegmentationModel(19, encoder=Encoder(enc, output_stride=os_), decoder=dec)
    losses = [CrossEntropy()] + ([MultiScaleContrast(stages=stages)] if contrast else [])
    module = ContrastSegModule(net, num_classes=19, losses=losses).to(device).train()
    guard = NonFiniteLossGuard(policy=nonfinite)  # what a training run does around the step (the module adds one)
    opt = torch.optim.SGD(module.parameters(), lr=1e-3, momentum=0.9)
    images = torch.randn(batch, 3, h, w, device=device)
    labels = realistic_labels(batch, h, w, 19, seed=0).to(device)

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    scaler = torch.amp.GradScaler(device, enabled=amp == "fp16")

    def step():
        with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
            if nonfinite != "ignore":
                guard.backup(module)
            loss, logs = module.training_loss(images, labels)
            guard.check(module, loss, logs, {"image": images}, 0)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    return step, (h, w)


def _measure(family, contrast, scale, batch, device, repeats, amp, consecutive=1, nonfinite="raise"):
    torch.manual_seed(0)
    step, size = _step_fn(family, contrast, scale, batch, device, amp, nonfinite)
    seconds, mib = timed(step, device, repeats, warmup=2, consecutive=consecutive)
    return seconds, mib, size


def measure(family, contrast, scale, batch, device, repeats, amp, consecutive=1, nonfinite="raise"):
    """CUDA in this process; CPU in fresh processes, time and memory apart (see ``cpu_time_and_memory``)."""
    if device == "cuda":
        return _measure(family, contrast, scale, batch, device, repeats, amp, consecutive, nonfinite)
    return cpu_time_and_memory(_measure, family, contrast, scale, batch, device, repeats=repeats, amp=amp,
                               consecutive=consecutive, nonfinite=nonfinite)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--scale", type=float, default=None, help="crop side scale (default 1 on CUDA, 0.25 on CPU)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--families", nargs="*", default=list(FAMILIES))
    parser.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none", help="autocast dtype")
    parser.add_argument("--consecutive", type=int, default=None,
                        help="steps timed back to back per repeat (default 3 on CUDA, 1 on CPU)")
    parser.add_argument("--nonfinite", choices=["raise", "ignore"], default="raise",
                        help="the module's non-finite loss check (default raise: a host sync per step, as training)")
    args = parser.parse_args()
    consecutive = args.consecutive or (3 if args.device == "cuda" else 1)
    scale = args.scale or (1.0 if args.device == "cuda" else 0.25)
    repeats = args.repeats or (10 if args.device == "cuda" else 3)
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; batch {args.batch}; crop scale {scale}; autocast {args.amp}; "
          f"median of {repeats} x {consecutive} consecutive steps; nonfinite {args.nonfinite}")
    print("| model | crop | CE img/s | CE+contrast img/s | step time ratio | CE peak MB | CE+contrast peak MB |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for family in args.families:
        options = (args.batch, args.device, repeats, args.amp, consecutive, args.nonfinite)
        t_ce, m_ce, size = measure(family, False, scale, *options)
        t_c, m_c, _ = measure(family, True, scale, *options)
        print(f"| {family} | {size[0]}x{size[1]} | {args.batch / t_ce:.2f} | {args.batch / t_c:.2f} | "
              f"{t_c / t_ce:.2f} | {m_ce:.0f} | {m_c:.0f} |", flush=True)


if __name__ == "__main__":
    main()
