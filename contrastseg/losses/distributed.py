"""Balanced sampling over the global batch of all processes (an option the paper's per-GPU sampling lacks).

Every process gathers the (small) label maps of all processes, draws the *same* anchor indices from a seed that
process 0 broadcasts, reads the embeddings of the anchors it owns, and an autograd-aware ``all_reduce`` assembles
the full anchor set on every process. Each process then computes the same global loss; in backward the
``all_reduce`` sums the gradients of the identical per-process losses (``world_size`` times the gradient), and
DDP's gradient averaging divides by ``world_size``: parameters receive exactly the gradient of the global loss.
Label maps must have the same shape on every process (fixed training crops).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from contrastseg.losses.sampling import gather_pixels, sample_anchor_indices_multiscale

__all__ = ["gather_anchor_sets"]


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def gather_anchor_sets(
    embeddings: Tensor, labels: Tensor, *, generator: torch.Generator | None = None, scale_name: str = "scale 0",
    **sampling: int,
) -> tuple[Tensor, Tensor]:
    """Balanced anchors of one scale sampled from the batches of all processes.

    Args:
        embeddings: ``(B, D, h, w)`` this process's embeddings.
        labels: ``(B, h, w)`` this process's labels at that resolution.
        generator: random source; process 0's draw seeds the shared sampling.
        scale_name: how a warning about the anchor budget names this scale.
        **sampling: ``ignore_index``, ``min_views_per_class``, ``max_views_per_class``, ``max_anchors``.

    Returns:
        ``(N, D)`` float32 anchors and ``(N,)`` labels of the global balanced set, identical on every process;
        with one process, the same draw as with several on the concatenated batch.
    """
    world, rank = _world()
    device = labels.device
    if world > 1:
        parts = [torch.empty_like(labels) for _ in range(world)]
        dist.all_gather(parts, labels.contiguous())
        global_labels = torch.cat(parts)  # world x (B, h, w) -> (world*B, h, w)
    else:
        global_labels = labels
    seed = torch.randint(0, 2**62, (1,), generator=generator, device=generator.device if generator else "cpu")
    if world > 1:
        seed = seed.to(device)
        dist.broadcast(seed, src=0)
    shared = torch.Generator(device=device).manual_seed(int(seed.item()))
    (index, anchor_labels), = sample_anchor_indices_multiscale([global_labels], generator=shared,
                                                              scale_names=[scale_name], **sampling)
    per_process = labels.numel()
    owner = index // per_process  # (N,) which process holds each anchor
    local_index = (index - rank * per_process).clamp(0, per_process - 1)
    rows = gather_pixels(embeddings, local_index).float() * (owner == rank)[:, None]  # (N, D), others' rows zero
    if world > 1:
        from torch.distributed.nn.functional import all_reduce

        rows = all_reduce(rows)  # sum over processes: every row filled once, gradients flow back to the owner
    return rows, anchor_labels
