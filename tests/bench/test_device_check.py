"""bench/device_check.sh --smoke: every part of the GPU check runs on the CPU and records its result.

The GPU machine gets one try at the check, so its script is run here the same way, at tiny
sizes: a typo in a flag, a missing import or a result that cannot be read shows up here first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "device_check.sh"
PARTS = ["train_clip_tiny", "train_clip_vit_b_32", "train_simclr", "index_throughput", "faiss_kmeans", "service"]


def run_check(out: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    # DEVICE_CHECK_SECONDS: a busy machine may be slow; this checks what runs, not how fast
    env = {**os.environ, "PYTHON": sys.executable, "DEVICE_CHECK_SECONDS": "3000", **(env or {})}
    env.pop("OUT", None)
    return subprocess.run([str(SCRIPT), "--smoke", "--out", str(out), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=3600)


def records(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}


@pytest.mark.device_check
def test_every_part_runs_and_records_its_result(tmp_path):
    proc = run_check(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = records(tmp_path)
    assert sorted(got) == sorted(PARTS), proc.stdout[-3000:]
    for name, r in got.items():
        assert r["status"] == "ok", (name, r.get("stderr_tail"))
        assert r["rc"] == 0 and r["seconds"] > 0 and r["result"]["machine"]["cuda"] is None
        assert r["goals"], name
    for name in ("train_clip_tiny", "train_clip_vit_b_32", "train_simclr"):
        assert all(v > 0 for v in got[name]["images_per_second"].values()), name
        assert got[name]["result"]["args"]["precision"] == "bf16"
    assert got["train_clip_tiny"]["images_per_second"].keys() == {"lookalike", "open_clip_train"}
    assert got["index_throughput"]["goals"]["job_vs_forward"]["value"] > 0
    assert got["index_throughput"]["result"]["images"] == 32
    service = got["service"]["goals"]
    assert {"text_http_vs_inprocess_p50", "image_http_vs_inprocess_p50", "batching_gain_4_clients"} <= service.keys()
    assert all(g["value"] > 0 for g in service.values())
    # faiss-cpu here: the CPU side is timed, the GPU side says why it did not run
    kmeans = got["faiss_kmeans"]
    assert kmeans["result"]["seconds"]["cpu"] > 0 and kmeans["result"]["seconds"]["gpu"] is None
    assert kmeans["skipped"].startswith("no faiss-gpu wheel at hand")
    assert kmeans["goals"]["gpu_vs_cpu_seconds"]["met"] is None
    log = (tmp_path / "device_check.log").read_text()
    assert "GPU: none visible to torch" in log and "total" in log.splitlines()[-1]


@pytest.mark.device_check
def test_a_failing_part_records_its_error_and_the_rest_go_on(tmp_path):
    # a lightly that cannot be imported, ahead of the real one: only the SimCLR part needs it
    planted = tmp_path / "planted" / "lightly"
    planted.mkdir(parents=True)
    (planted / "__init__.py").write_text("raise ImportError('planted: lightly is broken')\n")
    out = tmp_path / "out"
    proc = run_check(out, "--only", "train_simclr,faiss_kmeans", env={"PYTHONPATH": str(planted.parent)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = records(out)
    assert sorted(got) == ["faiss_kmeans", "train_simclr"]
    failed = got["train_simclr"]
    assert failed["status"] == "failed" and failed["rc"] != 0 and "result" not in failed
    assert any("planted: lightly is broken" in line for line in failed["stderr_tail"])
    assert got["faiss_kmeans"]["status"] == "ok"


# Each command line the check would run, parsed by its own bench's argparse and stopped there.
PARSE_ONLY = """
import argparse, json, runpy, shlex, sys
class Parsed(Exception):
    pass
parse = argparse.ArgumentParser.parse_args
def parse_only(self, *args, **kwargs):
    parse(self, *args, **kwargs)
    raise Parsed
argparse.ArgumentParser.parse_args = parse_only
sys.path.insert(0, "bench")
failed = {}
for line in sys.stdin.read().splitlines():
    name, _, command = line.partition(": ")
    argv = shlex.split(command)[1:]  # the bench script and its arguments
    sys.argv = argv
    try:
        runpy.run_path(argv[0], run_name="__main__")
        failed[name] = "ran past its argument parsing"
    except Parsed:
        pass
    except SystemExit as exc:
        failed[name] = f"argparse said no (exit {exc.code})"
print(json.dumps(failed))
"""


@pytest.mark.parametrize("mode", [[], ["--smoke"]], ids=["gpu-run", "smoke-run"])
def test_every_command_line_parses(mode):
    # the GPU run's own flags (sizes, --device cuda, worker counts) never run here: parse them
    proc = subprocess.run([str(SCRIPT), "--dry-run", *mode], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.partition(":")[0] for line in lines] == PARTS
    check = subprocess.run([sys.executable, "-c", PARSE_ONLY], cwd=REPO, input=proc.stdout, capture_output=True,
                           text=True, timeout=300)
    assert check.returncode == 0, check.stderr[-2000:]
    assert json.loads(check.stdout.splitlines()[-1]) == {}, check.stderr[-2000:]


def test_bad_arguments_are_refused_before_anything_runs(tmp_path):
    for args in (["--bogus"], ["--only", "train_clip_tiny,no_such_part"]):
        proc = subprocess.run([str(SCRIPT), *args, "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                              timeout=30)
        assert proc.returncode == 2 and proc.stderr.strip(), args
    assert not list(tmp_path.iterdir())


def test_the_full_run_refuses_a_machine_without_cuda(tmp_path):
    if subprocess.run([sys.executable, "-c", "import torch; assert not torch.cuda.is_available()"]).returncode:
        pytest.skip("this machine has CUDA: the full run would start")
    proc = subprocess.run([str(SCRIPT), "--out", str(tmp_path), "--wheels", str(tmp_path / "none")], cwd=REPO,
                          env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "no CUDA device" in proc.stdout + proc.stderr
    assert not list(tmp_path.glob("*.json"))
