"""What a training method supplies to the runner: its ``Method`` registration, the ``Job`` its
``prepare`` returns, and ``RunFiles``, the options every method's config shares.

Methods (``training.methods``) import this module; the runner (``training.runner``) imports the
methods. Keeping the contract apart is what keeps that import one-way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from core.distributed import DistInfo
from training.encoder import Encoder
from training.loop import LoopConfig
from training.options import option

# the command line's --device default
DEFAULT_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(kw_only=True)
class RunFiles:
    """What every method's config shares: the loop settings and the files a run reads and writes.
    A subclass supplies ``out`` (the encoder file); the checkpoint defaults to beside it."""

    checkpoint: Path | None = option(None, "checkpoint file (default: OUT.ckpt)")
    resume: Path | None = option(None, "continue exactly from this checkpoint")
    log_file: Path | None = option(None, "append logged steps here as JSONL")
    loop: LoopConfig = field(default_factory=LoopConfig)

    @property
    def checkpoint_path(self) -> Path:
        return self.checkpoint or self.out.with_name(self.out.name + ".ckpt")


@dataclass
class Job:
    """What a method's ``prepare`` hands the runner for one run."""

    step: Any  # training.loop's method: .model (trained, checkpointed), training_step(batch), [after_step()]
    encoder: Callable[[torch.nn.Module], Encoder]  # the model in training (unwrapped) -> an Encoder around it
    loader: Callable[[int], Iterable]  # the step to start at -> the batches from there on
    described: str  # printed before training
    arch: dict[str, Any]  # the encoder file's architecture record
    result: Callable[..., Any]  # (fingerprint, before, after, history, seconds) -> the run's result
    tokenizer: dict[str, Any] | None = None  # the encoder file's tokenizer record (CLIP)
    monitor: Callable[[Encoder], dict[str, float]] | None = None  # periodic validation metrics
    measure: Callable[[Encoder], Any] | None = None  # the figure reported before and after training
    summary: Callable[[Any, Any], dict[str, Any]] = lambda before, after: {}  # the method's run-summary entries
    report: Callable[[Any, Any], str] = lambda before, after: ""  # printed after training


@dataclass(frozen=True)
class Method:
    """A training method as ``python -m training NAME`` and ``run`` know it."""

    name: str  # the sub-command, the encoder file's kind, the run summary's method
    help: str
    config: type  # its config dataclass (a RunFiles); its ``option`` fields are its command-line options
    prepare: Callable[[Any, DistInfo, torch.device], Job]
    configure: Callable[[dict[str, Any], dict[str, Any]], Any]  # (field values, augmentation overrides) -> config
    loop_defaults: dict[str, Any] = field(default_factory=dict)  # the shared loop options' defaults for it
