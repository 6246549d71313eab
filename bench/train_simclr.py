"""Seconds per SimCLR training step: ``python -m training simclr`` against lightly's SimCLR, same everything.

Each runs in its own process, interleaved, on the same images (an image folder,
MNIST-5k by default), backbone (this project's ``training.backbones`` spec, so the network
is the same module), batch size, image size, augmentations (SimCLR's pipeline with the same
crop scale, flip, jitter, grayscale and blur settings: ours from ``training.augment``,
lightly's ``SimCLRTransform``; both torchvision v2), DataLoader workers, optimiser (AdamW,
same lr and weight decay), temperature, precision, CPU threads and memory format. lightly's
side is the training loop of its SimCLR example (two forward passes, ``NTXentLoss``,
``SimCLRProjectionHead``); ours runs with ``--separate-views`` (one forward per view, the
same computation) for the ratio, and with its default (one forward over both views, batch
norm statistics over both, as in SimCLR's code) for reference. Each logs the wall time of every step, data loading
included; the medians after a warm-up are compared. ratio = ours / lightly's (below 1.0: ours is faster).

    pip install -e '.[bench]'          # lightly
    python bench/train_simclr.py [--data DIR] [--backbone small-cnn] [--batch-size 256] [--steps 30]

It also checks that the two NT-Xent implementations agree on random inputs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, SHARED, median_after, save

sys.path.insert(0, str(REPO))


def ours(a, out: Path, separate_views: bool) -> list[float]:
    log = out / f"ours-{separate_views}.jsonl"
    cmd = [sys.executable, "-m", "training", "simclr", "--data", str(a.data), "--out", str(out / "ours.safetensors"),
           "--backbone", a.backbone, "--image-size", str(a.image_size), "--batch-size", str(a.batch_size),
           "--steps", str(a.steps), "--workers", str(a.workers), "--lr", str(a.lr), "--weight-decay", str(a.wd),
           "--warmup", "5", "--temperature", str(a.temperature), "--precision", a.precision, "--device", a.device,
           "--min-scale", str(a.min_scale), "--flip-prob", str(a.flip_prob), "--jitter-prob", str(a.jitter_prob),
           "--jitter-strength", str(a.jitter_strength), "--grayscale-prob", str(a.grayscale_prob),
           "--blur-prob", str(a.blur_prob), "--threads", str(a.threads), "--log-every", "1", "--log-file", str(log),
           "--no-progress"]
    if a.channels_last:
        cmd.append("--channels-last")
    if separate_views:
        cmd.append("--separate-views")
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"python -m training simclr failed:\n{proc.stderr[-3000:]}")
    elapsed = [json.loads(line)["elapsed_s"] for line in log.read_text().splitlines()]
    return [b - a_ for a_, b in zip([0.0] + elapsed[:-1], elapsed)]


def theirs(a) -> list[float]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--lightly-worker", *sys.argv[1:]]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"lightly run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def lightly_worker(a) -> None:
    """lightly's SimCLR example loop, timed per step (data loading included); prints the times as JSON."""
    import torch
    from lightly.data import LightlyDataset
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.transforms import SimCLRTransform
    from torch import nn

    from training.backbones import build_backbone, parse_backbone
    from training.image_only import IMAGENET_MEAN, IMAGENET_STD

    torch.manual_seed(0)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)

    class SimCLR(nn.Module):
        def __init__(self, backbone: nn.Module) -> None:
            super().__init__()
            self.backbone = backbone
            self.projection_head = SimCLRProjectionHead(backbone.out_dim, 512, 128)

        def forward(self, x):
            return self.projection_head(self.backbone(x).flatten(start_dim=1))

    model = SimCLR(build_backbone(parse_backbone(a.backbone))).to(device)
    if a.channels_last:
        model = model.to(memory_format=torch.channels_last)
    transform = SimCLRTransform(input_size=a.image_size, cj_prob=a.jitter_prob, cj_strength=a.jitter_strength,
                                min_scale=a.min_scale, random_gray_scale=a.grayscale_prob,
                                gaussian_blur=a.blur_prob, hf_prob=a.flip_prob,
                                normalize={"mean": IMAGENET_MEAN, "std": IMAGENET_STD})
    dataset = LightlyDataset(input_dir=str(a.data), transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=a.batch_size, shuffle=True, drop_last=True,
                                         num_workers=a.workers, pin_memory=device.type == "cuda")
    criterion = NTXentLoss(temperature=a.temperature)
    optimizer = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=a.wd)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[a.precision]
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < a.steps:
        for (x0, x1), _, _ in loader:
            x0, x1 = x0.to(device, non_blocking=True), x1.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                z0, z1 = model(x0), model(x1)
                loss = criterion(z0, z1)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            float(loss)  # wait for the step, as our loop's logging does
            now = time.perf_counter()
            times.append(now - started)
            started = now
            if len(times) == a.steps:
                break
    print(json.dumps(times))


def loss_agreement() -> float:
    """Largest |ours - lightly's| NT-Xent over a few random batches (single process)."""
    import torch
    from lightly.loss import NTXentLoss

    from training.losses import nt_xent

    worst = 0.0
    g = torch.Generator().manual_seed(0)
    for b, d, t in [(2, 8, 0.5), (16, 32, 0.1), (64, 128, 0.2)]:
        z0, z1 = torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)
        worst = max(worst, abs(nt_xent(z0, z1, t).item() - NTXentLoss(temperature=t)(z0, z1).item()))
    return worst


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=SHARED / "mnist-5k", help="a folder of images")
    p.add_argument("--backbone", default="small-cnn")
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--wd", type=float, default=1e-4)
    p.add_argument("--temperature", type=float, default=0.5)
    p.add_argument("--min-scale", type=float, default=0.2)
    p.add_argument("--flip-prob", type=float, default=0.5)
    p.add_argument("--jitter-prob", type=float, default=0.8)
    p.add_argument("--jitter-strength", type=float, default=0.5)
    p.add_argument("--grayscale-prob", type=float, default=0.2)
    p.add_argument("--blur-prob", type=float, default=0.0)
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads of each training process (0: torch's default), the same in both runs")
    p.add_argument("--channels-last", action="store_true", help="NHWC weights in both runs")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--warmup-steps", type=int, default=5, help="steps left out of the median")
    p.add_argument("--repeats", type=int, default=1, help="interleaved runs of each variant")
    p.add_argument("--name", default="train_simclr_cpu", help="results file name in bench/results")
    p.add_argument("--lightly-worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.lightly_worker:
        lightly_worker(a)
        return

    # Interleaved runs, so that drifting load on the machine hits every variant. The ratio
    # compares like with like: ours with one forward per view, as lightly's loop does. Our
    # default (one forward over both views: SimCLR's joint batch-norm statistics) is timed too.
    runs: dict[str, list[list[float]]] = {"lookalike": [], "lookalike_joint_views": [], "lightly": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(a.repeats):
            runs["lookalike"].append(ours(a, Path(tmp), separate_views=True))
            runs["lightly"].append(theirs(a))
            runs["lookalike_joint_views"].append(ours(a, Path(tmp), separate_views=False))
    med = {k: median_after([t for run in v for t in run[a.warmup_steps:]], 0) for k, v in runs.items()}
    s_ours, s_theirs = med["lookalike"], med["lightly"]
    import lightly

    args = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items() if k != "lightly_worker"}
    path = save(a.name, {
        "command": "train_simclr.py " + " ".join(sys.argv[1:]),
        "lightly": lightly.__version__,
        "args": args,
        "seconds_per_step": med,
        "ratio": s_ours / s_theirs,
        "nt_xent_max_abs_difference": loss_agreement(),
        "raw_step_seconds": runs,
    })
    print(f"seconds/step (median after {a.warmup_steps}): lookalike {s_ours:.3f}, lightly {s_theirs:.3f}, "
          f"ratio {s_ours / s_theirs:.2f}\nlookalike with one forward over both views (its default): "
          f"{med['lookalike_joint_views']:.3f}, ratio {med['lookalike_joint_views'] / s_theirs:.2f}\nwrote {path}")


if __name__ == "__main__":
    main()
