"""A run interrupted and resumed ends where an uninterrupted run ends."""

import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO, interrupt_at
from training.loop import Interrupted, LoopConfig
from training.methods.clip import ClipTrainConfig
from training.runner import run


def _cfg(manifest, out, **kw):
    return ClipTrainConfig(
        data=manifest, out=out, image_key="file", caption_key="name", model="lookalike-micro", batch_size=16,
        workers=0, eval_limit=16, loop=LoopConfig(steps=8, lr=1e-3, warmup_steps=2, log_every=1, progress=False),
        **kw,
    )


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_interrupt_and_resume_match_an_uninterrupted_run(small_manifest, tmp_path, monkeypatch):
    whole = run(_cfg(small_manifest, tmp_path / "whole.safetensors"))

    # Interrupt after step 3: the Trainer writes a checkpoint on the way out.
    interrupt_at(monkeypatch, 3)
    ckpt = tmp_path / "run.ckpt"
    with pytest.raises(Interrupted, match="step 3"):
        run(_cfg(small_manifest, tmp_path / "resumed.safetensors", checkpoint=ckpt))
    monkeypatch.undo()
    assert ckpt.exists()

    torch.manual_seed(12345)  # a fresh process would start from other RNG states
    resumed = run(_cfg(small_manifest, tmp_path / "resumed.safetensors", checkpoint=ckpt, resume=ckpt))
    assert [r["step"] for r in resumed.history] == list(range(1, 9))
    for a, b in zip(whole.history, resumed.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
    wa, wb = _weights(tmp_path / "whole.safetensors"), _weights(tmp_path / "resumed.safetensors")
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-5, atol=1e-6, msg=name)
    # On one CPU the arithmetic is deterministic: the resumed encoder is bit-for-bit the same file content.
    assert resumed.fingerprint == whole.fingerprint


def test_cli_resume_from_a_periodic_checkpoint(small_manifest, tmp_path):
    args = [sys.executable, "-m", "training", "clip", "--data", str(small_manifest), "--image-key", "file",
            "--caption-key", "name", "--model", "lookalike-micro", "--batch-size", "16", "--workers", "0",
            "--checkpoint-every", "2", "--log-every", "1", "--no-progress", "--log-file", str(tmp_path / "log.jsonl")]
    first = subprocess.run(args + ["--steps", "4", "--out", str(tmp_path / "a.safetensors")], cwd=REPO,
                           capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    ckpt = tmp_path / "a.safetensors.ckpt"
    state = torch.load(ckpt, weights_only=True)
    assert state["step"] == 4
    # Resuming with a longer schedule continues from step 4 (the schedule then stretches to 6).
    again = subprocess.run(args + ["--steps", "6", "--out", str(tmp_path / "b.safetensors"), "--resume", str(ckpt)],
                           cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "at step 4" in again.stdout
    steps = [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
