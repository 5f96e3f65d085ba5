"""Process bodies for the two-process gloo tests (imported by spawned children, so no test_ prefix)."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from contrastseg import ContrastSegModule
from contrastseg.losses import CrossEntropy, MultiScaleContrast, MultiScaleContrastiveLoss
from contrastseg.models import Encoder, HRNetV2Head, SegmentationModel

STRIDES = (4, 8, 16, 32)


def global_batch(b: int = 4, d: int = 8, h: int = 128, w: int = 192):
    """The same embeddings and labels in every process (seeded), to be split by rank."""
    g = torch.Generator().manual_seed(0)
    emb = [torch.randn(b, d, h // s, w // s, generator=g) for s in STRIDES]
    bands = (torch.arange(w) // 32) % 5
    labels = torch.stack([torch.randperm(5, generator=g)[bands].expand(h, w) for _ in range(b)]).clone()
    labels[1, :40] = 255
    return emb, labels


def _init(rank: int, world: int, port: int) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)


def gathered_loss(rank: int, world: int, port: int, out_dir: str) -> None:
    """Each process holds half the batch; with gathering the loss must be the global one."""
    _init(rank, world, port)
    emb, labels = global_batch()
    per = labels.shape[0] // world
    local = [e[rank * per:(rank + 1) * per].clone().requires_grad_() for e in emb]
    loss = MultiScaleContrastiveLoss(gather_distributed=True)
    out = loss(local, labels[rank * per:(rank + 1) * per], generator=torch.Generator().manual_seed(123))
    out.total.backward()
    torch.save({"total": out.total.detach(), "per_scale": [x.detach() for x in out.per_scale],
                "cross_scale": [x.detach() for x in out.cross_scale], "grads": [e.grad for e in local]},
               Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


class _Step(torch.nn.Module):
    """forward = the module's whole objective, so DDP wraps model and projectors together."""

    def __init__(self, module: ContrastSegModule) -> None:
        super().__init__()
        self.module = module

    def forward(self, image, mask):
        return self.module.training_loss(image, mask)[0]


def train_steps(rank: int, world: int, port: int, out_dir: str, gather: bool) -> None:
    """A few DDP steps where process 1's batch is all ignore: must neither hang nor complain."""
    _init(rank, world, port)
    torch.manual_seed(0)
    net = SegmentationModel(5, encoder=Encoder("resnet18"), decoder=partial(HRNetV2Head, channels=16))
    module = ContrastSegModule(net, num_classes=5,
                               losses=[CrossEntropy(), MultiScaleContrast(gather_distributed=gather)])
    step = DistributedDataParallel(_Step(module))  # find_unused_parameters=False: every parameter must get a grad
    opt = torch.optim.SGD(step.parameters(), lr=0.01)
    _, labels = global_batch(b=2, h=64, w=96)
    if rank == 1:
        labels[:] = 255
    losses = []
    for _ in range(3):
        image = torch.randn(2, 3, 64, 96)
        loss = step(image, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    flat = torch.cat([p.detach().flatten() for p in step.parameters()])
    torch.save({"losses": losses, "params": flat}, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


def train_steps_with_memory(rank: int, world: int, port: int, out_dir: str, kind: str) -> None:
    """DDP steps of a term with a memory while process 1's batch is all ignore: no hang, no unused parameter, no
    ``loss * 0``, and the same memory on every process."""
    from contrastseg.losses import PixelContrast, RegionContrast

    _init(rank, world, port)
    torch.manual_seed(0)
    net = SegmentationModel(5, encoder=Encoder("resnet18"), decoder=partial(HRNetV2Head, channels=16))
    term = (PixelContrast(embedding_dim=16, max_views=4, memory_size=6) if kind == "pixel"
            else RegionContrast(embedding_dim=16, memory_size=6))
    module = ContrastSegModule(net, num_classes=5, losses=[CrossEntropy(), term])
    step = DistributedDataParallel(_Step(module))  # find_unused_parameters=False: every parameter must get a grad
    opt = torch.optim.SGD(step.parameters(), lr=0.01)
    _, labels = global_batch(b=2, h=64, w=96)
    if rank == 1:
        labels[:] = 255
    losses = []
    for _ in range(3):
        loss = step(torch.randn(2, 3, 64, 96), labels)
        opt.zero_grad()
        loss.backward()
        module.on_after_backward()  # what Lightning calls after the backward pass: the memory update
        opt.step()
        losses.append(loss.item())
    flat = torch.cat([p.detach().flatten() for p in step.parameters()])
    memories = {k: v for k, v in module.state_dict().items() if "memory." in k}
    torch.save({"losses": losses, "params": flat, "memories": memories}, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()
