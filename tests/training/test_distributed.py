"""Two CPU processes (gloo) on halves of a batch give the gradients of one process on the whole batch."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from core.distributed import DistInfo
from tests.conftest import _free_port
from training.clip_model import build_model, model_config
from training.distributed import wrap
from training.methods.clip import ClipMethod

BATCH = 8


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(BATCH, 3, 32, 32, generator=g), torch.randint(1, 2000, (BATCH, 16), generator=g)


def _grads(rank: int, world_size: int, grouped: str | None = None) -> dict[str, torch.Tensor]:
    """grouped: None (plain CLIP), or where the image-only SupCon term looks ("embedding", "backbone")."""
    torch.manual_seed(0)
    model = build_model(model_config("lookalike-micro"))
    if grouped:  # two views, shared captions as positives, and the image-only SupCon term
        from training.methods.clip import ClipTrainingModel
        from training.methods.simclr import ProjectionHead

        model = ClipTrainingModel(model, grouped, ssl_dim=16)
        if grouped == "backbone":
            # batch norm's statistics are per process (SyncBatchNorm is for GPUs): compare without it
            model.ssl_head = ProjectionHead(32, 512, 16, batch_norm=False)
    model = wrap(model, DistInfo(rank, world_size, rank), torch.device("cpu"))
    images, tokens = _data()
    per = BATCH // world_size
    rows = slice(rank * per, (rank + 1) * per)
    if grouped:
        method = ClipMethod.create(model, rank, world_size, "multi-positive", ssl_weight=0.5)
        groups = torch.tensor([0, 1, 0, 2, 3, 3, 4, 1])  # groups that span the two halves
        batch = [images[rows], images.flip(-1)[rows], tokens[rows], groups[rows]]
    else:
        method = ClipMethod.create(model, rank, world_size)
        batch = [images[rows], tokens[rows]]
    loss = method.training_step(batch)["loss"]
    loss.backward()
    inner = model.module if hasattr(model, "module") else model
    return {n: p.grad.detach().clone() for n, p in inner.named_parameters() if p.grad is not None}


def _worker(rank: int, world_size: int, port: int, out_dir: str, grouped: str | None) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        torch.save(_grads(rank, world_size, grouped), os.path.join(out_dir, f"grads{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("grouped", [None, "embedding", "backbone"],
                         ids=["clip", "multi-positive+supcon", "multi-positive+supcon-head"])
def test_two_processes_match_one_on_the_global_batch(tmp_path, grouped):
    single = _grads(0, 1, grouped)
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path), grouped), nprocs=2, join=True,
                       start_method="spawn")
    for rank in range(2):
        ddp = torch.load(tmp_path / f"grads{rank}.pt", weights_only=True)
        assert ddp.keys() == single.keys()
        for name, g in single.items():
            torch.testing.assert_close(ddp[name], g, rtol=1e-4, atol=1e-6, msg=f"rank {rank}: {name}")
