"""Forward+backward time and peak extra memory of the full multi-scale + cross-scale contrastive loss.

Compares ``contrastseg.losses.MultiScaleContrastiveLoss`` with a baseline written the way the authors' code works:
a Python loop over (image, class) pairs for the balanced sampler (a host sync per pair) and the plain dense
InfoNCE (the N x N similarity, its exp and masks kept for autograd). Same inputs, same run.

    python -m contrastseg.benchmarks.contrastive_loss                 # CUDA if available, full paper shapes
    python -m contrastseg.benchmarks.contrastive_loss --scale 0.25    # scaled-down shapes (CPU)

Cases (the paper's): Cityscapes-like, batch 8, 512x1024, 19 classes with Cityscapes' pixel imbalance; ADE20K-like,
batch 16, 512x512, 150 classes; 256-d embeddings at strides 4/8/16/32. ``--scale`` shrinks the image side.
Memory on CUDA is ``max_memory_allocated`` above the inputs; on CPU, time and memory are measured in two fresh
processes, the memory one with glibc returning freed blocks to the system (so resident-set growth is the step's
own). Both include the gradients of the input embeddings (as large as the embeddings, created by any loss on them:
340 MiB in the full Cityscapes-like and ADE20K-like cases); the last column subtracts them, a lower bound of what
the loss itself holds at its peak (exact when the peak comes after the gradients exist).
``--profile`` adds the CUDA kernels of our loss in the Cityscapes-like case, by time (torch.profiler);
``--sampler`` adds the balanced sampler alone (all four scales in one draw, as the loss does), per case.
"""

from __future__ import annotations

import argparse
import platform

import torch
import torch.nn.functional as F

from contrastseg.benchmarks._harness import cpu_time_and_memory, timed
from contrastseg.losses import (
    MultiScaleContrastiveLoss,
    infonce_triton,
    sample_anchor_indices_multiscale,
    supervised_infonce,
)

STRIDES = (4, 8, 16, 32)
WEIGHTS = (1.0, 0.7, 0.4, 0.1)
PAIRS = ((0, 3), (0, 2))
# Cityscapes train pixel frequencies of the 19 classes (%), roughly: road, sidewalk, building, wall, fence, pole,
# traffic light, traffic sign, vegetation, terrain, sky, person, rider, car, truck, bus, train, motorcycle, bicycle.
CITYSCAPES_FREQ = (36.9, 6.1, 22.8, 0.65, 0.88, 1.2, 0.2, 0.55, 15.9, 1.16, 4.0, 1.2, 0.13, 7.0, 0.27, 0.23, 0.23,
                   0.1, 0.4)


def realistic_labels(batch: int, h: int, w: int, classes: int, seed: int) -> torch.Tensor:
    """Blobby label maps with a long-tailed class distribution, small objects and ~8% ignore."""
    g = torch.Generator().manual_seed(seed)
    if classes == 19:
        freq = torch.tensor(CITYSCAPES_FREQ)
    else:  # ADE20K-like: Zipf over 150 classes
        freq = 1.0 / torch.arange(1, classes + 1).float()
    cell = 32
    coarse = torch.multinomial(freq, batch * (h // cell + 1) * (w // cell + 1), True, generator=g)
    coarse = coarse.view(batch, h // cell + 1, w // cell + 1)
    labels = coarse.repeat_interleave(cell, 1).repeat_interleave(cell, 2)[:, :h, :w].clone()
    for b in range(batch):  # small objects of rare classes
        for _ in range(20):
            c = int(torch.multinomial(freq.sqrt(), 1, generator=g))
            y, x = int(torch.randint(0, h - 16, (1,), generator=g)), int(torch.randint(0, w - 16, (1,), generator=g))
            sh, sw = (int(v) for v in torch.randint(4, 16, (2,), generator=g))
            labels[b, y:y + sh, x:x + sw] = c
    labels[torch.rand(batch, h, w, generator=g) < 0.08] = 255
    return labels


# ----------------------------------------------------------------------------------------- baseline


def _dense_infonce(z, y, zc=None, yc=None, t=0.1):
    if len(z) == 0 or (zc is not None and len(zc) == 0):  # (the authors' code crashed here)
        return z.sum() * 0.0
    same = zc is None
    z = F.normalize(z, dim=1)
    zc, yc = (z, y) if same else (F.normalize(zc, dim=1), yc)
    logits = z @ zc.T / t
    pos = (y[:, None] == yc[None, :]).float()
    neg = 1.0 - pos
    if same:
        pos = pos * (1 - torch.eye(len(z), device=z.device))
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    exp = torch.exp(logits)
    neg_sum = (exp * neg).sum(dim=1, keepdim=True)
    log_prob = logits - torch.log(exp + neg_sum)
    per_anchor = -(log_prob * pos).sum(1) / pos.sum(1).clamp_min(1)
    return per_anchor.mean()


def _loop_sampler(emb, labels, min_views=5, max_views=2500, max_anchors=10000):
    pairs = []
    for b in range(labels.shape[0]):
        for c in labels[b].unique().tolist():  # host sync per image
            if c == 255:
                continue
            idx = (labels[b] == c).nonzero()  # host sync per pair
            if len(idx) >= min_views:
                pairs.append((b, c, idx))
    if not pairs:
        return emb.new_zeros(0, emb.shape[1]), labels.new_zeros(0)
    v = min(min(len(p[2]) for p in pairs), max_views)
    if v * len(pairs) > max_anchors:
        v = max_anchors // len(pairs)
    feats, labs = [], []
    for b, c, idx in pairs:
        pick = idx[torch.randperm(len(idx), device=idx.device)[:v]]
        feats.append(emb[b, :, pick[:, 0], pick[:, 1]].T)
        labs.append(torch.full((v,), c, device=labels.device))
    return torch.cat(feats), torch.cat(labs)


def baseline_loss(embeddings, labels):
    sets = [_loop_sampler(e, labels[:, ::s, ::s]) for e, s in zip(embeddings, STRIDES)]
    total = sum(w * _dense_infonce(*sets[i]) for i, w in enumerate(WEIGHTS))
    return total + sum(_dense_infonce(*sets[a], *sets[b]) for a, b in PAIRS)


# ----------------------------------------------------------------------------------------- measurement


def _inputs(case, scale, device):
    batch, h, w, classes = case[1:]
    h, w = int(h * scale) // 32 * 32, int(w * scale) // 32 * 32
    labels = realistic_labels(batch, h, w, classes, seed=0).to(device)
    g = torch.Generator().manual_seed(1)
    emb = [torch.randn(batch, 256, h // s, w // s, generator=g).to(device).requires_grad_() for s in STRIDES]
    return emb, labels


def _quadratic_inputs(n, device):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(n, 256, generator=g).to(device).requires_grad_()
    y = torch.randint(0, 19, (n,), generator=g).to(device)
    return z, y


_BACKENDS = {"contrastseg (torch)": "torch", "contrastseg (triton)": "triton"}  # "contrastseg": the default, auto


def _measure(impl, case, scale, device, repeats, threads=None):
    if threads:  # here, not only in the parent: CPU measurements run in fresh processes
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    if case[0] == "quadratic":  # Eq. 1-2 alone on N anchors: dense N x N versus blockwise
        z, y = _quadratic_inputs(case[1], device)
        emb = [z]
        fn = (lambda: _dense_infonce(z, y)) if impl == "baseline" else (
            lambda: supervised_infonce(z, y, backend=_BACKENDS.get(impl, "auto")))
    else:
        emb, labels = _inputs(case, scale, device)
        ours = MultiScaleContrastiveLoss(backend=_BACKENDS.get(impl, "auto"))
        fn = (lambda: baseline_loss(emb, labels)) if impl == "baseline" else (lambda: ours(emb, labels).total)

    def clear_grads():
        for e in emb:
            e.grad = None

    seconds, mib = timed(lambda: fn().backward(), device, repeats, before=clear_grads)
    grads_mib = sum(e.numel() * e.element_size() for e in emb) / 2**20
    return seconds * 1000, mib, max(mib - grads_mib, 0.0)


def sampler_ms(case, scale: float, device: str, repeats: int) -> float:
    """Median milliseconds of the balanced draw of the four scales (its host sync included), in this process."""
    _, labels = _inputs(case, scale, device)
    labels_at = [labels[:, ::s, ::s] for s in STRIDES]  # (B, H, W) -> (B, H/s, W/s) per scale
    generator = torch.Generator(device=device).manual_seed(0)
    seconds, _ = timed(lambda: sample_anchor_indices_multiscale(labels_at, generator=generator), device, repeats)
    return seconds * 1000


def profile(scale: float, device: str) -> None:
    """Print our loss's kernels in the Cityscapes-like case, by total device time, and the launch count."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    emb, labels = _inputs(("Cityscapes-like", 8, 512, 1024, 19), scale, device)
    loss = MultiScaleContrastiveLoss()
    for _ in range(3):
        loss(emb, labels).total.backward()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        loss(emb, labels).total.backward()
        if device == "cuda":
            torch.cuda.synchronize()
    key = "cuda_time_total" if device == "cuda" else "cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=60))
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    print(f"device kernels/copies in one forward+backward: {len(kernels)}")


def measure(impl, case, scale, device, repeats, threads=None):
    """CUDA in this process; CPU in fresh processes, time and memory apart (see ``cpu_time_and_memory``)."""
    if device == "cuda":
        return _measure(impl, case, scale, device, repeats)
    return cpu_time_and_memory(_measure, impl, case, scale, device, repeats=repeats, threads=threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--scale", type=float, default=None, help="image side scale (default 1 on CUDA, 0.25 on CPU)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--anchors", type=int, nargs="*", default=[4000, 10000])
    parser.add_argument("--profile", action="store_true", help="also profile our loss (Cityscapes-like case)")
    parser.add_argument("--sampler", action="store_true", help="also time the balanced sampler alone, per case")
    parser.add_argument("--triton-split", action="store_true",
                        help="run the Triton kernels with infonce_triton.SPLIT on (loops split across programs)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="only our implementations (the baseline takes most of a CUDA run's time)")
    args = parser.parse_args()
    scale = args.scale or (1.0 if args.device == "cuda" else 0.25)
    infonce_triton.SPLIT = args.triton_split  # CUDA measurements run in this process
    repeats = args.repeats or (20 if args.device == "cuda" else 5)
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = [("Cityscapes-like", 8, 512, 1024, 19), ("ADE20K-like", 16, 512, 512, 150)]
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"{platform.processor() or 'CPU'}, " \
        f"{torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; image scale {scale}; median of {repeats}"
          + ("; Triton kernels split" if args.triton_split else ""))
    print("| case | shape | implementation | fwd+bwd ms | peak extra MB | without input grads MB |")
    print("|---|---|---|---:|---:|---:|")
    for case in cases:
        batch, h, w = case[1], int(case[2] * scale) // 32 * 32, int(case[3] * scale) // 32 * 32
        # On CUDA "contrastseg" (backend="auto") runs each term on the Triton kernels or the PyTorch path, by size;
        # both backends alone are shown beside it.
        impls = (("baseline", "contrastseg (torch)", "contrastseg (triton)", "contrastseg") if args.device == "cuda"
                 else ("baseline", "contrastseg"))
        impls = impls[1:] if args.no_baseline else impls
        rows = {impl: measure(impl, case, scale, args.device, repeats, args.threads) for impl in impls}
        for impl, (ms, mb, own) in rows.items():
            print(f"| {case[0]} | {batch}x{h}x{w}, {case[4]} classes | {impl} | {ms:.1f} | {mb:.0f} | {own:.0f} |",
                  flush=True)
        if "baseline" in rows:
            ratio = rows["baseline"][0] / rows["contrastseg"][0]
            print(f"| {case[0]} | | speed-up | {ratio:.1f}x | | |", flush=True)
    if args.anchors:
        print("\nThe quadratic part alone (Eq. 1-2 on N anchors of 256-d, 19 classes): dense versus ours")
        print("| N | implementation | fwd+bwd ms | peak extra MB |")
        print("|---:|---|---:|---:|")
    labels = {"baseline": "dense (plain vectorised)", "contrastseg (torch)": "contrastseg blockwise (torch)",
              "contrastseg (triton)": "contrastseg fused (Triton)", "contrastseg": "contrastseg (auto)"}
    for n in args.anchors:
        for impl in impls:
            ms, mb, _ = measure(impl, ("quadratic", n), scale, args.device, repeats, args.threads)
            print(f"| {n} | {labels[impl]} | {ms:.1f} | {mb:.0f} |", flush=True)
    if args.sampler:
        print("\nThe balanced sampler alone (four scales, one draw, as in the loss)")
        print("| case | shape | sampler ms |")
        print("|---|---|---:|")
        for case in cases:
            batch, h, w = case[1], int(case[2] * scale) // 32 * 32, int(case[3] * scale) // 32 * 32
            ms = sampler_ms(case, scale, args.device, repeats)
            print(f"| {case[0]} | {batch}x{h}x{w}, {case[4]} classes | {ms:.2f} |", flush=True)
    if args.profile:
        print()
        profile(scale, args.device)


if __name__ == "__main__":
    main()
