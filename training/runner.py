"""One runner for every training method: ``run(cfg)`` trains the method whose config ``cfg`` is.

A method (``training.methods``) registers a ``Method``: its name, its config dataclass (whose
``option`` fields are its command-line options) and ``prepare``, which builds its model, training
step, data and monitor into a ``Job``. The runner does the rest, the same for all: the process
group under torchrun, seeding, precision, the Trainer (checkpoints, exact resume, monitor), the
before/after measure, and the encoder file with the run's summary. Every Encoder around the model
in training (the monitor's, the measure's, the file's weights) comes from the job's one builder,
``Job.encoder``. Runs unchanged on one CPU or under ``torchrun`` on several GPUs / machines.
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, replace
from typing import Any

import torch

from core.distributed import init_from_env
from training.distributed import unwrap
from training.encoder import save_encoder
from training.loop import Trainer, jsonable, resolve_precision, seed_everything
from training.method import Job, Method, RunFiles
from training.methods import registered


def method_of(cfg: Any) -> Method:
    for method in registered().values():
        if type(cfg) is method.config:
            return method
    raise ValueError(f"no training method takes a {type(cfg).__name__}")


def run(cfg: RunFiles) -> Any:
    """Train, write the encoder file (``cfg.out``), return the method's result."""
    method = method_of(cfg)
    dist, device = init_from_env(cfg.device)
    seed_everything(cfg.seed)
    cfg.loop = replace(cfg.loop, precision=resolve_precision(cfg.loop.precision, device))
    job = method.prepare(cfg, dist, device)
    monitor = (lambda model: job.monitor(job.encoder(model))) if job.monitor and dist.is_main else None
    trainer = Trainer(job.step, cfg.loop, device, dist, checkpoint=cfg.checkpoint_path, log_file=cfg.log_file,
                      monitor=monitor)
    if dist.is_main:
        print(job.described)

    before = None
    if cfg.resume:
        start = trainer.load_checkpoint(cfg.resume)
        if dist.is_main:
            print(f"resumed from {cfg.resume} at step {start}")
    elif dist.is_main and job.measure is not None:
        before = _measured(job, trainer)
    loader = job.loader(trainer.step)

    started = time.perf_counter()
    history = trainer.fit(loader)
    seconds = time.perf_counter() - started
    if not dist.is_main:
        return job.result(None, None, None, history, seconds)

    after = _measured(job, trainer) if job.measure is not None else None
    encoder = job.encoder(unwrap(trainer.raw_model).eval())
    summary = {
        "method": method.name,
        "data": str(cfg.data),
        **job.summary(before, after),
        "config": jsonable(asdict(cfg)),
        "world_size": dist.world_size,
        "final_loss": history[-1]["loss"] if history and "loss" in history[-1] else None,
        "train_seconds": round(seconds, 1),
        "torch": torch.__version__,
        "host": platform.node(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    fp = save_encoder(cfg.out, kind=encoder.kind, arch=job.arch, state_dict=encoder.model.state_dict(),
                      preprocess=encoder.preprocess, dim=encoder.dim, tokenizer=job.tokenizer, run=summary)
    report = job.report(before, after)
    if report:
        print(report)
    print(f"\nwrote {cfg.out} (fingerprint {fp[:16]}) after {seconds:.0f} s of training")
    return job.result(fp, before, after, history, seconds)


def _measured(job: Job, trainer: Trainer) -> Any:
    model = unwrap(trainer.raw_model)
    model.eval()
    try:
        return job.measure(job.encoder(model))
    finally:
        model.train()
