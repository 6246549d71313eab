"""init_from_env joins the process group that torchrun's variables describe, and needs none for one process."""

import os
import subprocess
import sys

import torch

from core.distributed import DistInfo, barrier, init_from_env
from tests.conftest import REPO, _free_port

RANK = """
import torch.distributed as dist
from core.distributed import barrier, init_from_env
info, device = init_from_env("cpu")
barrier(info)
seen = [None] * info.world_size
dist.all_gather_object(seen, info.rank)
print(info.rank, info.world_size, info.local_rank, info.is_main, device, seen)
dist.destroy_process_group()
"""


def test_one_process_needs_no_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info, device = init_from_env("cpu")
    assert info == DistInfo() and info.is_main and not info.enabled
    assert device == torch.device("cpu")
    assert not torch.distributed.is_initialized()
    barrier(info)  # a no-op without a group


def test_two_processes_join_one_group_from_torchruns_variables():
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    procs = [subprocess.Popen([sys.executable, "-c", RANK], cwd=REPO, stdout=subprocess.PIPE, text=True,
                              env={**env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                                   "WORLD_SIZE": "2", "LOCAL_RANK": str(rank), "OMP_NUM_THREADS": "1"})
             for rank in range(2)]
    outputs = [p.communicate(timeout=120)[0].strip().split(maxsplit=5) for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outputs == [["0", "2", "0", "True", "cpu", "[0, 1]"], ["1", "2", "1", "False", "cpu", "[0, 1]"]]
