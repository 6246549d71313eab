"""Two CPU processes (gloo) on halves of a batch train SimCLR and MoCo exactly like one process on the whole batch.

Batch norm would make the halves differ (its statistics are per process unless synchronised, and
SyncBatchNorm needs GPUs), so the networks here use GroupNorm and a head without batch norm.
"""

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from core.distributed import DistInfo
from tests.conftest import _free_port
from training.backbones import build_backbone
from training.distributed import wrap
from training.methods.moco import MoCoMethod, MoCoModel
from training.methods.simclr import SimCLRMethod, SimCLRModel

BATCH = 8
SPEC = {"name": "small-cnn", "width": 8, "depth": 2, "norm": "gn"}


def _views():
    g = torch.Generator().manual_seed(0)
    return torch.randn(BATCH, 3, 12, 12, generator=g), torch.randn(BATCH, 3, 12, 12, generator=g)


def _halves(rank: int, world_size: int):
    per = BATCH // world_size
    return [v[rank * per:(rank + 1) * per] for v in _views()]


def _simclr_grads(rank: int, world_size: int, joint_views: bool = True) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = wrap(SimCLRModel(build_backbone(SPEC), 16, 8, head_bn=False), DistInfo(rank, world_size, rank),
                 torch.device("cpu"))
    method = SimCLRMethod(model, 0.3, rank, world_size, joint_views=joint_views)
    loss = method.training_step(_halves(rank, world_size))["loss"]
    loss.backward()
    inner = model.module if hasattr(model, "module") else model
    return {"loss": loss.detach()} | {n: p.grad.detach().clone() for n, p in inner.named_parameters()
                                      if p.grad is not None}


def _moco_state(rank: int, world_size: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = wrap(MoCoModel(build_backbone(SPEC), 16, 8, queue_size=12, head_bn=False),
                 DistInfo(rank, world_size, rank), torch.device("cpu"))
    method = MoCoMethod(model, 0.2, 0.9, rank=rank, world_size=world_size)
    method.training_step(_halves(rank, world_size))["loss"].backward()
    inner = model.module if hasattr(model, "module") else model
    return {"queue": inner.queue.clone(), "queue_ptr": inner.queue_ptr.clone(),
            "grad": inner.head[0].weight.grad.clone()}


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        torch.save({"simclr": _simclr_grads(rank, world_size), "moco": _moco_state(rank, world_size),
                    # one forward per view: DDP sees the model called twice before one backward
                    "simclr_separate": _simclr_grads(rank, world_size, joint_views=False)},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_processes_match_one_on_the_global_batch(tmp_path):
    simclr, moco = _simclr_grads(0, 1), _moco_state(0, 1)
    separate = _simclr_grads(0, 1, joint_views=False)
    # without batch norm the two layouts compute the same function
    for name, g in simclr.items():
        torch.testing.assert_close(separate[name], g, rtol=1e-5, atol=1e-6, msg=f"separate views: {name}")
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    losses = []
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        # SimCLR: negatives gathered with gradient + DDP's averaging = the gradient of the global loss
        assert got["simclr"].keys() == simclr.keys()
        for name, g in simclr.items():
            if name != "loss":
                torch.testing.assert_close(got["simclr"][name], g, rtol=1e-4, atol=1e-6, msg=f"rank {rank}: {name}")
        for name, g in separate.items():
            if name != "loss":
                torch.testing.assert_close(got["simclr_separate"][name], g, rtol=1e-4, atol=1e-6,
                                           msg=f"rank {rank}, separate views: {name}")
        losses.append(got["simclr"]["loss"])
        # MoCo: every process enqueues the keys of the whole global batch, in rank order
        torch.testing.assert_close(got["moco"]["queue"], moco["queue"], rtol=1e-5, atol=1e-6)
        assert int(got["moco"]["queue_ptr"]) == int(moco["queue_ptr"]) == BATCH
        torch.testing.assert_close(got["moco"]["grad"], moco["grad"], rtol=1e-4, atol=1e-6)
    # each process's loss covers its own anchors; their mean is the single-process loss
    torch.testing.assert_close(torch.stack(losses).mean(), simclr["loss"], rtol=1e-5, atol=1e-6)
