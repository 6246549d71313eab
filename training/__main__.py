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
    p.add_argument("--pretrained", default=None,
                   help="start from these weights: an open_clip tag (downloads) or a local checkpoint file")
    p.add_argument("--lock-image", action="store_true", help="freeze the image tower (LiT-style)")
    p.add_argument("--lock-text", action="store_true", help="freeze the text tower")
    p.add_argument("--image-size", type=int, default=None, help="override the model's input size")
    p.add_argument("--batch-size", type=int, default=128, help="per process")
    p.add_argument("--accum-steps", type=int, default=1, help="batches per optimiser step")
    p.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm (0: off)")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=50, help="warm-up steps")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                   help="autocast precision (bf16 on GPUs that have it)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--checkpoint", type=Path, default=None, help="checkpoint file (default: OUT.ckpt)")
    p.add_argument("--checkpoint-every", type=int, default=0, help="steps between checkpoints (0: end/interrupt)")
    p.add_argument("--resume", type=Path, default=None, help="continue exactly from this checkpoint")
    p.add_argument("--log-file", type=Path, default=None, help="append logged steps here as JSONL")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--val-data", type=Path, default=None, help="validation manifest for the periodic monitor")
    p.add_argument("--val-label-key", action="append", default=[], help="zero-shot column of --val-data")
    p.add_argument("--val-group-key", default=None, help="image->image group column of --val-data")
    p.add_argument("--eval-every", type=int, default=0, help="steps between monitor runs")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")


def _eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate encoders on a manifest: zero-shot, text<->image, image->image",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--encoder", action="append", required=True,
                   help="encoder file or open_clip:MODEL/TAG_OR_PATH; repeat to compare several side by side")
    p.add_argument("--data", type=Path, required=True, help="JSONL or CSV manifest")
    p.add_argument("--image-key", default="file")
    p.add_argument("--caption-key", default=None, help="column used as text for text<->image recall")
    p.add_argument("--label-key", action="append", default=[], help="column for zero-shot accuracy (repeatable)")
    p.add_argument("--group-key", default=None, help="image->image hits share this column (e.g. code)")
    p.add_argument("--where", action="append", default=[], metavar="COLUMN=VALUE",
                   help="evaluate only rows whose column has this value (repeatable)")
    p.add_argument("--template", action="append", default=None,
                   help="zero-shot prompt template with {} for the label (repeatable; default: a small ensemble)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    _clip_parser(sub)
    _eval_parser(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.command == "clip":
        from training.train_clip import ClipTrainConfig, run

        cfg = ClipTrainConfig(
            data=args.data, out=args.out, image_key=args.image_key, caption_key=args.caption_key,
            model=args.model, pretrained=args.pretrained, lock_image=args.lock_image, lock_text=args.lock_text,
            image_size=args.image_size, batch_size=args.batch_size, workers=args.workers,
            seed=args.seed, device=args.device, checkpoint=args.checkpoint, resume=args.resume,
            log_file=args.log_file, val_data=args.val_data, val_label_keys=args.val_label_key,
            val_group_key=args.val_group_key,
            loop=LoopConfig(steps=args.steps, lr=args.lr, weight_decay=args.weight_decay,
                            warmup_steps=args.warmup, grad_clip=args.grad_clip or None,
                            accum_steps=args.accum_steps, precision=args.precision, compile=args.compile,
                            log_every=args.log_every, eval_every=args.eval_every,
                            checkpoint_every=args.checkpoint_every, progress=not args.no_progress),
        )
        from training.loop import Interrupted

        try:
            run(cfg)
        except (ValueError, FileNotFoundError) as exc:  # bad manifest, unknown model, missing files
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except Interrupted as exc:
            print(f"{exc}; continue with --resume", file=sys.stderr)
            return 130
    if args.command == "eval":
        from training.eval_clip import DEFAULT_TEMPLATES, EvalConfig, format_table, run, write_json

        try:
            where = dict(w.split("=", 1) for w in args.where)
        except ValueError:
            parser.error("--where takes COLUMN=VALUE")
        cfg = EvalConfig(
            encoders=args.encoder, data=args.data, image_key=args.image_key, caption_key=args.caption_key,
            label_keys=args.label_key, group_key=args.group_key, where=where,
            templates=tuple(args.template or DEFAULT_TEMPLATES), device=args.device,
        )
        try:
            results = run(cfg)
        except (ValueError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(format_table(results))
        if args.json:
            write_json(args.json, cfg, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
