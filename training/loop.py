"""The training loop shared by every method.

A method is any object with

    model:          torch.nn.Module whose parameters are trained
    training_step(batch) -> dict[str, Tensor]   # must hold "loss"; other entries are logged
    after_step()    (optional) e.g. clamp CLIP's temperature

The loop owns the optimiser (AdamW, no weight decay on gains/biases/temperature),
the cosine schedule with warm-up, gradient clipping, mixed precision and progress.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm


@dataclass
class LoopConfig:
    steps: int = 1000
    lr: float = 5e-4
    weight_decay: float = 0.1
    warmup_steps: int = 50
    grad_clip: float | None = 1.0
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    precision: str = "fp32"  # "fp32" | "bf16" | "fp16"
    log_every: int = 10
    progress: bool = True


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only: gains, biases, embeddings' scales and the temperature are exempt."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exempt = p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if exempt else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def cosine_with_warmup(warmup: int, total: int) -> Callable[[int], float]:
    """LR multiplier: linear warm-up to 1, then cosine decay to 0 at ``total``."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


def forever(loader: Iterable) -> Iterator:
    """Cycle through a DataLoader epoch after epoch (each epoch reshuffles)."""
    while True:
        yield from loader


def autocast_for(device: torch.device, precision: str):
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device.type, dtype=dtype)


def train(method, loader: Iterable, cfg: LoopConfig, device: torch.device) -> list[dict[str, float]]:
    """Run ``cfg.steps`` optimisation steps; returns the logged history."""
    model = method.model
    model.train()
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(cfg.warmup_steps, cfg.steps))
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    history: list[dict[str, float]] = []
    batches = forever(loader)
    bar = tqdm(range(cfg.steps), desc="train", unit="step", disable=not cfg.progress, dynamic_ncols=True)
    started = time.perf_counter()
    for step in bar:
        batch = [t.to(device, non_blocking=True) for t in next(batches)]
        with autocast_for(device, cfg.precision):
            losses = method.training_step(batch)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(losses["loss"]).backward()
        if cfg.grad_clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        if hasattr(method, "after_step"):
            method.after_step()
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            row = {"step": step + 1, "lr": scheduler.get_last_lr()[0]}
            row.update({k: float(v.detach()) for k, v in losses.items()})
            row["elapsed_s"] = time.perf_counter() - started
            history.append(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{row['lr']:.1e}")
    model.eval()
    return history
