"""Eq. 1-2 alone at the anchor counts of the loss benchmark: the fused Triton kernels against the PyTorch path.

    python -m contrastseg.benchmarks.infonce_kernels                      # CUDA: both backends, the default tiles
    python -m contrastseg.benchmarks.infonce_kernels --tiles 64,32,8,3 forward_grad=32,16,8,2,16   # also these tile shapes
    python -m contrastseg.benchmarks.infonce_kernels --split               # also the split kernels (infonce_triton.SPLIT)

The sizes are the anchor sets the balanced sampler draws in the loss benchmark (``N`` rows against ``M``
columns, 256-d): Cityscapes-like 792/1690/678/370 per scale and 792 x 370, 792 x 678 across scales; ADE20K-like
6575/6350/3260/815 and 6575 x 815, 6575 x 3260, with labels grouped by class as the sampler orders them. Each row
is one term's forward + backward (median), so the table shows where the loss's time goes and which tile shape
suits the device.
"""

from __future__ import annotations

import argparse

import torch

from contrastseg.benchmarks._harness import timed
from contrastseg.losses import infonce_triton
from contrastseg.losses.infonce import l2_normalize, supervised_infonce

TERMS = {
    "Cityscapes-like": [(792, None), (1690, None), (678, None), (370, None), (792, 370), (792, 678)],
    "ADE20K-like": [(6575, None), (6350, None), (3260, None), (815, None), (6575, 815), (6575, 3260)],
}


def _term(n: int, m: int | None, classes: int, device: str, backend: str):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(n, 256, generator=g).to(device).requires_grad_()
    y = torch.randint(0, classes, (n,), generator=g).sort().values.to(device)  # grouped by class, as sampled
    extra = ()
    if m is not None:
        zc = torch.randn(m, 256, generator=g).to(device).requires_grad_()
        extra = (zc, torch.randint(0, classes, (m,), generator=g).sort().values.to(device))
    inputs = [z] + ([extra[0]] if extra else [])

    def step():
        rows = l2_normalize(z)
        cols = (l2_normalize(extra[0]), extra[1]) if extra else ()
        supervised_infonce(rows, y, *cols, normalized=True, backend=backend).backward()

    def clear():
        for x in inputs:
            x.grad = None

    return step, clear


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--tiles", nargs="*", default=[],
                        help="extra Triton tiles [KERNEL=]BLOCK_M,BLOCK_N,num_warps,num_stages[,BLOCK_K]: for every "
                             "kernel, or for one (forward, forward_grad, grad_cols, ...)")
    parser.add_argument("--split", action="store_true", help="also time the kernels with infonce_triton.SPLIT on")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("contrastseg.benchmarks.infonce_kernels needs a CUDA device (the Triton kernels' target)")
    default = infonce_triton._configs
    variants = ([("torch", None), ("triton", None)] + [("triton", t) for t in args.tiles]
                + ([("triton", "split")] if args.split else []))
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}; median of {args.repeats}; ms per term")
    print("| case | N x M | " + " | ".join(b if t is None else f"triton {t}" for b, t in variants) + " |")
    print("|---|---|" + "---:|" * len(variants))
    totals = {}
    for case, terms in TERMS.items():
        classes = 19 if case.startswith("City") else 150
        for n, m in terms:
            cells = []
            for backend, tiles in variants:
                infonce_triton._CHOSEN.clear()
                infonce_triton.SPLIT = tiles == "split"
                if tiles not in (None, "split"):  # this tile shape first, the defaults as fallbacks if it does not fit
                    only, _, spec = tiles.rpartition("=")  # "grad_cols=16,32,8,2": that kernel only
                    bm, bn, warps, stages, *bk = (int(v) for v in spec.split(","))
                    shape = {"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": warps, "num_stages": stages,
                             **({"BLOCK_K": bk[0]} if bk else {})}
                    infonce_triton._configs = lambda d, kernel, shape=shape, only=only: (
                        [default(d, kernel)[0] | shape] if only in ("", kernel) else []) + default(d, kernel)
                step, clear = _term(n, m, classes, "cuda", backend)
                ms = timed(step, "cuda", args.repeats, warmup=2, before=clear)[0] * 1000
                infonce_triton._configs, infonce_triton.SPLIT = default, False
                used = {k[0]: tuple(v[x] for x in ("BLOCK_M", "BLOCK_N", "num_warps", "num_stages", "BLOCK_K"))
                        for k, v in infonce_triton._CHOSEN.items()}
                if backend == "triton" and n == terms[0][0] and m is None:
                    print(f"<!-- {tiles or 'default'}: tiles used {used} -->", flush=True)
                totals[(case, backend, tiles)] = totals.get((case, backend, tiles), 0.0) + ms
                cells.append(f"{ms:.2f}")
            print(f"| {case} | {n} x {m or n} | " + " | ".join(cells) + " |", flush=True)
        print(f"| {case} | sum of the 6 terms | "
              + " | ".join(f"{totals[(case, b, t)]:.2f}" for b, t in variants) + " |", flush=True)


if __name__ == "__main__":
    main()
