"""``python -m training``: train encoders.

    python -m training clip --data MANIFEST --image-key KEY --caption-key KEY --out ENCODER
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from training.loop import LoopConfig


def _clip_parser(sub) -> None:
    p = sub.add_parser("clip", help="train a CLIP encoder on image-caption pairs",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="JSONL or CSV manifest; image paths relative to it")
    p.add_argument("--image-key", default="file", help="manifest column with the image path")
    p.add_argument("--caption-key", default="caption", help="manifest column with the caption")
    p.add_argument("--out", type=Path, required=True, help="encoder file to write (.safetensors)")
    p.add_argument("--model", default="lookalike-tiny",
                   help="open_clip model name (lookalike-tiny and lookalike-micro are small CPU configs)")
    p.add_argument("--image-size", type=int, default=None, help="override the model's input size")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=50, help="warm-up steps")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    _clip_parser(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.command == "clip":
        from training.train_clip import ClipTrainConfig, run

        cfg = ClipTrainConfig(
            data=args.data, out=args.out, image_key=args.image_key, caption_key=args.caption_key,
            model=args.model, image_size=args.image_size, batch_size=args.batch_size, workers=args.workers,
            seed=args.seed, device=args.device,
            loop=LoopConfig(steps=args.steps, lr=args.lr, weight_decay=args.weight_decay,
                            warmup_steps=args.warmup, precision=args.precision, progress=not args.no_progress),
        )
        try:
            run(cfg)
        except (ValueError, FileNotFoundError) as exc:  # bad manifest, unknown model, missing files
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
