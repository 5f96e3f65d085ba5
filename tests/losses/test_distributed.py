"""Two processes with gloo on CPU: all-ignore on one rank, and global-batch sampling (slow tests: DDP)."""

import math
import socket

import pytest
import torch
import torch.multiprocessing as mp

from contrastseg.losses import MultiScaleContrastiveLoss

from . import ddp_worker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(fn, *args) -> None:
    mp.spawn(fn, args=(2, _free_port(), *args), nprocs=2, join=True)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_gathered_loss_equals_single_process_loss_on_concatenated_batch(tmp_path) -> None:
    _spawn(ddp_worker.gathered_loss, str(tmp_path))
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    emb, labels = ddp_worker.global_batch()
    emb = [e.clone().requires_grad_() for e in emb]
    ref = MultiScaleContrastiveLoss(gather_distributed=True)(emb, labels, generator=torch.Generator().manual_seed(123))
    ref.total.backward()
    for r in ranks:
        torch.testing.assert_close(r["total"], ref.total.detach())
        torch.testing.assert_close(r["per_scale"], [x.detach() for x in ref.per_scale])
        torch.testing.assert_close(r["cross_scale"], [x.detach() for x in ref.cross_scale])
    # Each rank's embedding gradient is world_size x the global gradient of its half (DDP averages it back).
    for s in range(4):
        got = torch.cat([ranks[0]["grads"][s], ranks[1]["grads"][s]]) / 2
        torch.testing.assert_close(got, emb[s].grad, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("gather", [False, True])
def test_ddp_steps_with_an_all_ignore_rank(tmp_path, gather: bool) -> None:
    _spawn(ddp_worker.train_steps, str(tmp_path), gather)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for r in ranks:
        assert all(math.isfinite(x) for x in r["losses"])
    torch.testing.assert_close(ranks[0]["params"], ranks[1]["params"])  # gradients were synchronised


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["pixel", "region"])
def test_memory_terms_under_ddp_with_an_all_ignore_rank(tmp_path, kind: str) -> None:
    _spawn(ddp_worker.train_steps_with_memory, str(tmp_path), kind)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for r in ranks:
        assert all(math.isfinite(x) for x in r["losses"])
    torch.testing.assert_close(ranks[0]["params"], ranks[1]["params"])  # gradients were synchronised
    memories = ranks[0]["memories"]
    assert memories and all(torch.equal(v, ranks[1]["memories"][k]) for k, v in memories.items())
    assert any(int(v.sum()) > 0 for k, v in memories.items() if k.endswith("count"))  # rank 0's rows arrived
