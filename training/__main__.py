"""``python -m training``: train and evaluate encoders.

    python -m training clip --data MANIFEST --image-key KEY --caption-key KEY --out ENCODER
    python -m training simclr --data FOLDER_OR_MANIFEST --out ENCODER     (also: moco, rotnet)
    python -m training eval --encoder ENCODER [--encoder ...] --data MANIFEST | --folder LABELLED_FOLDER
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from training.loop import LoopConfig
from training.malloc import retain_freed_memory


def _loop_flags(p: argparse.ArgumentParser, *, batch_size: int, grad_clip: float, steps: int, lr: float,
                weight_decay: float, warmup: int, precision: str = "fp32") -> None:
    """The options of ``training.loop`` every trainer shares; defaults differ per method."""
    p.add_argument("--batch-size", type=int, default=batch_size, help="per process")
    p.add_argument("--accum-steps", type=int, default=1, help="batches per optimiser step")
    p.add_argument("--grad-clip", type=float, default=grad_clip, help="max gradient norm (0: off)")
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--weight-decay", type=float, default=weight_decay)
    p.add_argument("--warmup", type=int, default=warmup, help="warm-up steps")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"] + (["auto"] if precision == "auto" else []),
                   default=precision,
                   help="autocast precision (auto: bf16 where the GPU or CPU runs it natively, else fp32)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--checkpoint", type=Path, default=None, help="checkpoint file (default: OUT.ckpt)")
    p.add_argument("--checkpoint-every", type=int, default=0, help="steps between checkpoints (0: end/interrupt)")
    p.add_argument("--resume", type=Path, default=None, help="continue exactly from this checkpoint")
    p.add_argument("--log-file", type=Path, default=None, help="append logged steps here as JSONL")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--tensorboard", type=Path, default=None, metavar="DIR",
                   help="also write the logged steps as TensorBoard scalars to DIR (needs tensorboard)")


def _augment_flags(p: argparse.ArgumentParser) -> None:
    """The augmentation settings (``training.augment.AugmentConfig``); unset ones keep the method's defaults."""
    p.add_argument("--min-scale", type=float, default=None, help="random resized crop: smallest area fraction")
    p.add_argument("--flip-prob", type=float, default=None, help="horizontal flip probability")
    p.add_argument("--jitter-prob", type=float, default=None, help="colour jitter probability")
    p.add_argument("--jitter-strength", type=float, default=None, help="colour jitter strength s")
    p.add_argument("--colour-jitter", action=argparse.BooleanOptionalAction, default=None,
                   help="jitter saturation and hue too (--no-colour-jitter: brightness and contrast only, e.g. for "
                        "grayscale data; default: the method's)")
    p.add_argument("--grayscale-prob", type=float, default=None, help="random grayscale probability")
    p.add_argument("--blur-prob", type=float, default=None, help="Gaussian blur probability")
    p.add_argument("--rotate-prob", type=float, default=None, help="random rotation probability")
    p.add_argument("--rotate-degrees", type=float, default=None, help="random rotation range (+-degrees)")


def _augment_overrides(args: argparse.Namespace) -> dict:
    overrides = {k: getattr(args, k) for k in ("min_scale", "flip_prob", "jitter_prob", "jitter_strength",
                                                 "grayscale_prob", "blur_prob", "rotate_prob", "rotate_degrees")
                 if getattr(args, k) is not None}
    if args.colour_jitter is not None:
        overrides.update(jitter_saturation=args.colour_jitter, jitter_hue=args.colour_jitter)
    return overrides


def _loop_config(args: argparse.Namespace) -> LoopConfig:
    return LoopConfig(steps=args.steps, lr=args.lr, weight_decay=args.weight_decay, warmup_steps=args.warmup,
                      grad_clip=args.grad_clip or None, accum_steps=args.accum_steps, precision=args.precision,
                      compile=args.compile, log_every=args.log_every, eval_every=args.eval_every,
                      checkpoint_every=args.checkpoint_every, progress=not args.no_progress,
                      tensorboard_dir=str(args.tensorboard) if args.tensorboard else None)


def _clip_parser(sub) -> None:
    p = sub.add_parser("clip", help="train a CLIP encoder on image-caption pairs",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--recipe", type=Path, default=None,
                   help="JSON file of option defaults (training/recipes/*.json); flags given here override it")
    p.add_argument("--data", type=Path, required=True,
                   help="JSONL or CSV manifest (image paths relative to it), or webdataset shards: "
                        "'DIR/{00000..00099}.tar' or a folder of .tar files")
    p.add_argument("--image-key", default="file",
                   help="manifest column with the image path; for shards the image extension(s), e.g. 'jpg;png'")
    p.add_argument("--caption-key", default="caption",
                   help="manifest column with the caption; for shards the caption extension, e.g. 'txt'")
    p.add_argument("--out", type=Path, required=True, help="encoder file to write (.safetensors)")
    p.add_argument("--model", default="lookalike-cnn",
                   help="open_clip model name (lookalike-cnn: a small CNN image tower at 32 px for CPUs and small "
                        "data; lookalike-tiny, lookalike-micro: small ViT configs)")
    p.add_argument("--image-backbone", default=None,
                   help="replace the model's image tower by this backbone: small-cnn[,width=32,depth=4] | "
                        "resnet18[,small_stem=true] | timm:MODEL | a JSON object")
    p.add_argument("--pretrained", default=None,
                   help="start from these weights: an open_clip tag (downloads) or a local checkpoint file")
    p.add_argument("--image-tower", type=Path, default=None, metavar="ENCODER",
                   help="use this image-only encoder file (simclr/moco/rotnet) as the image tower, with a "
                        "learnt projection; with --lock-image its backbone stays frozen (LiT)")
    p.add_argument("--lock-image", action="store_true", help="freeze the image tower (LiT-style)")
    p.add_argument("--lock-text", action="store_true", help="freeze the text tower")
    p.add_argument("--loss", choices=["clip", "siglip"], default="clip",
                   help="clip: softmax contrastive (ClipLoss); siglip: pairwise sigmoid (SigLipLoss)")
    p.add_argument("--image-size", type=int, default=None, help="override the model's input size")
    p.add_argument("--views", type=int, choices=[1, 2], default=2,
                   help="2: two augmented views per item, the multi-positive CLIP loss and the image-only term; "
                        "1: plain CLIP on (image, caption) pairs with --loss")
    p.add_argument("--multi-positive", action=argparse.BooleanOptionalAction, default=True,
                   help="items sharing a caption (or --group-key) are positives in both terms; "
                        "--no-multi-positive: only an item's own views and caption are")
    p.add_argument("--group-key", default=None, help="manifest column: rows with the same value are positives")
    p.add_argument("--ssl-weight", type=float, default=1.0,
                   help="weight of the image-only supervised-contrastive term beside CLIP's loss (SLIP; 0: off)")
    p.add_argument("--ssl-temperature", type=float, default=0.1, help="temperature of that term")
    p.add_argument("--ssl-dim", type=int, default=128, help="output width of its projection head")
    p.add_argument("--caption-variant-key", action="append", default=[], metavar="COLUMN",
                   help="manifest column of more captions per row (a string or a list); one is drawn per step")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                   help="the image side's style augmentation (crops, brightness and contrast jitter); "
                        "--no-augment: open_clip's training transform")
    _augment_flags(p)
    p.add_argument("--cache-mb", type=float, default=1024,
                   help="decode the manifest's images into memory when they fit in this many MiB (0: never)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC image tower (default: for convolutional towers)")
    _loop_flags(p, batch_size=256, grad_clip=1.0, steps=400, lr=2e-3, weight_decay=0.1, warmup=40,
                precision="auto")
    p.add_argument("--val-data", type=Path, default=None, help="validation manifest for the periodic monitor")
    p.add_argument("--val-label-key", action="append", default=[], help="zero-shot column of --val-data")
    p.add_argument("--val-group-key", default=None, help="image->image group column of --val-data")
    p.add_argument("--eval-every", type=int, default=0, help="steps between monitor runs")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")


SSL_HELP = {
    "simclr": "train a SimCLR image encoder (no labels): two augmented views, NT-Xent",
    "moco": "train a MoCo v2 image encoder (no labels): momentum key encoder and a queue of negatives",
    "rotnet": "train a RotNet image encoder (no labels): predict 0/90/180/270 degree rotations",
}


def _ssl_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help=SSL_HELP[name], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--recipe", type=Path, default=None,
                   help="JSON file of option defaults (training/recipes/*.json); flags given here override it")
    p.add_argument("--data", type=Path, required=True,
                   help="a folder of images (searched recursively) or a JSONL/CSV manifest")
    p.add_argument("--image-key", default="file", help="manifest column with the image path")
    p.add_argument("--where", action="append", default=[], metavar="COLUMN=VALUE",
                   help="train only on manifest rows whose column has this value (repeatable)")
    p.add_argument("--holdout", type=float, default=0.0,
                   help="--data is a folder of class sub-folders: leave out this stratified fraction (the test "
                        "split of 'eval --folder' with the same --test-fraction and --split-seed)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the held-out / monitor split")
    p.add_argument("--out", type=Path, required=True, help="encoder file to write (.safetensors)")
    p.add_argument("--backbone", default="small-cnn",
                   help="small-cnn[,width=32,depth=3,norm=bn] | resnet18[,small_stem=true] | resnet50 | "
                        "timm:MODEL | a JSON object")
    p.add_argument("--image-size", type=int, default=32, help="training and embedding input size (px)")
    _augment_flags(p)
    if name in ("simclr", "moco"):
        p.add_argument("--temperature", type=float, default=None, help="contrastive temperature (0.1 SimCLR, 0.2 MoCo)")
        p.add_argument("--proj-hidden", type=int, default=512, help="projection head hidden width")
        p.add_argument("--proj-dim", type=int, default=128, help="projection head output width")
    if name == "simclr":
        p.add_argument("--separate-views", action="store_true",
                       help="one forward pass per view (batch norm statistics per view, as lightly's examples do) "
                            "instead of one over both views (SimCLR's joint statistics); on CPUs a smaller batch "
                            "per pass can be faster")
    if name == "moco":
        p.add_argument("--momentum", type=float, default=0.99, help="key encoder momentum")
        p.add_argument("--queue-size", type=int, default=4096, help="negatives kept from earlier batches")
        p.add_argument("--symmetric", action="store_true", help="symmetrised loss (both views as queries)")
    if name in ("simclr", "moco"):
        p.add_argument("--batch-augment", action=argparse.BooleanOptionalAction, default=True,
                       help="decode the images once into memory and augment whole batches at once (without blur); "
                            "--no-batch-augment: torchvision's transforms one view at a time")
        p.add_argument("--cache-mb", type=float, default=1024, help="the in-memory images' limit (MiB)")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across torchrun processes (GPUs)")
    p.add_argument("--channels-last", action="store_true", help="NHWC weights (faster convolutions on CPUs)")
    _loop_flags(p, batch_size=256, grad_clip=0.0, steps=500, lr=2e-3, weight_decay=1e-4, warmup=25, precision="auto")
    p.add_argument("--val-folder", type=Path, default=None,
                   help="labelled folder (class sub-folders) for the k-NN monitor")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="the monitor's query fraction of --val-folder (the rest is the k-NN memory bank)")
    p.add_argument("--knn-k", type=int, default=20, help="neighbours of the k-NN monitor")
    p.add_argument("--eval-every", type=int, default=0, help="steps between monitor runs")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads of the training process (0: torch's default; 1 leaves cores to the workers)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")


def _ssl_config(args: argparse.Namespace, where: dict[str, str]):
    from training.augment import AugmentConfig
    from training.backbones import parse_backbone
    from training.train_ssl import SSLTrainConfig

    overrides = _augment_overrides(args)
    backbone = args.backbone if isinstance(args.backbone, dict) else parse_backbone(args.backbone)
    return SSLTrainConfig(
        method=args.command, data=args.data, out=args.out, image_key=args.image_key, where=where,
        holdout=args.holdout, split_seed=args.split_seed, backbone=backbone, image_size=args.image_size,
        augment=AugmentConfig.for_size(args.image_size, **overrides),
        temperature=getattr(args, "temperature", None), proj_hidden=getattr(args, "proj_hidden", 512),
        proj_dim=getattr(args, "proj_dim", 128), momentum=getattr(args, "momentum", 0.99),
        queue_size=getattr(args, "queue_size", 4096), symmetric=getattr(args, "symmetric", False),
        separate_views=getattr(args, "separate_views", False),
        batch_augment=getattr(args, "batch_augment", False), cache_mb=getattr(args, "cache_mb", 1024.0),
        sync_bn=args.sync_bn, channels_last=args.channels_last, threads=args.threads, batch_size=args.batch_size,
        workers=args.workers, seed=args.seed, device=args.device,
        checkpoint=args.checkpoint, resume=args.resume, log_file=args.log_file, val_folder=args.val_folder,
        val_fraction=args.val_fraction, knn_k=args.knn_k,
        loop=_loop_config(args),
    )


def _apply_recipe(parser: argparse.ArgumentParser, subparser: argparse.ArgumentParser, recipe: Path,
                  argv: list[str] | None) -> argparse.Namespace:
    """Re-parse with the recipe's values as defaults, so explicit flags still win."""
    import json

    try:
        values = {k: v for k, v in json.loads(recipe.read_text()).items() if not k.startswith("_")}
    except (OSError, json.JSONDecodeError) as exc:
        parser.error(f"cannot read recipe {recipe}: {exc}")
    known = {a.dest for a in subparser._actions}
    unknown = sorted(set(values) - known)
    if unknown:
        parser.error(f"recipe {recipe} has unknown options: {', '.join(unknown)}")
    subparser.set_defaults(**values)
    return parser.parse_args(argv)


def _eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate encoders: zero-shot, text<->image, image->image, k-NN, linear probe",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--encoder", action="append", required=True,
                   help="encoder file or open_clip:MODEL/TAG_OR_PATH; repeat to compare several side by side")
    p.add_argument("--data", type=Path, default=None, help="JSONL or CSV manifest")
    p.add_argument("--image-key", default="file")
    p.add_argument("--caption-key", default=None, help="column used as text for text<->image recall")
    p.add_argument("--label-key", action="append", default=[], help="column for zero-shot accuracy (repeatable)")
    p.add_argument("--group-key", default=None, help="image->image hits share this column (e.g. code)")
    p.add_argument("--where", action="append", default=[], metavar="COLUMN=VALUE",
                   help="evaluate only rows whose column has this value (repeatable)")
    p.add_argument("--template", action="append", default=None,
                   help="zero-shot prompt template with {} for the label (repeatable; default: a small ensemble)")
    p.add_argument("--folder", type=Path, default=None,
                   help="labelled image folder (sub-folder names are labels) for k-NN and linear-probe accuracy")
    p.add_argument("--probe-key", default=None, help="manifest column used as the label for k-NN / linear probe")
    p.add_argument("--test-fraction", type=float, default=0.2, help="stratified test split for k-NN / linear probe")
    p.add_argument("--split-seed", type=int, default=0, help="seed of that split")
    p.add_argument("--knn-k", type=int, action="append", default=None, help="k of the k-NN vote (repeatable; default 20)")
    p.add_argument("--knn-temperature", type=float, default=0.07, help="k-NN votes weigh exp(similarity / this)")
    p.add_argument("--linear-wd", type=float, default=1e-4, help="linear probe L2 penalty")
    p.add_argument("--linear-iters", type=int, default=300, help="linear probe L-BFGS iterations (0: no probe)")
    p.add_argument("--pixels", action=argparse.BooleanOptionalAction, default=None,
                   help="add the raw-pixel baseline (default: with --folder / --probe-key)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--plot", type=Path, default=None, help="also draw the table as a bar chart (PNG; needs matplotlib)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    _clip_parser(sub)
    for name in SSL_HELP:
        _ssl_parser(sub, name)
    _eval_parser(sub)
    x = sub.add_parser("export", help="write an encoder as an open_clip model (config + weights) or ONNX graphs")
    x.add_argument("encoder", help="encoder file or open_clip:MODEL/TAG_OR_PATH")
    x.add_argument("--format", choices=["open_clip", "onnx"], required=True)
    x.add_argument("--out", type=Path, required=True, help="folder to write into")
    args = parser.parse_args(argv)
    if getattr(args, "recipe", None):
        args = _apply_recipe(parser, sub.choices[args.command], args.recipe, argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    retain_freed_memory()  # steps free and re-allocate the same activations: keep them mapped

    if args.command == "clip":
        from training.augment import AugmentConfig
        from training.train_clip import CLIP_AUGMENT, ClipTrainConfig, run

        cfg = ClipTrainConfig(
            data=args.data, out=args.out, image_key=args.image_key, caption_key=args.caption_key,
            model=args.model, pretrained=args.pretrained, lock_image=args.lock_image, lock_text=args.lock_text,
            loss=args.loss, image_tower=args.image_tower, image_size=args.image_size,
            image_backbone=_backbone(parser, args.image_backbone), views=args.views,
            multi_positive=args.multi_positive,
            group_key=args.group_key, ssl_weight=args.ssl_weight, ssl_temperature=args.ssl_temperature,
            ssl_dim=args.ssl_dim, caption_variant_keys=args.caption_variant_key,
            augment=AugmentConfig(**{**CLIP_AUGMENT, **_augment_overrides(args)}) if args.augment else None,
            cache_mb=args.cache_mb, channels_last=args.channels_last, batch_size=args.batch_size, workers=args.workers,
            seed=args.seed, device=args.device, checkpoint=args.checkpoint, resume=args.resume,
            log_file=args.log_file, val_data=args.val_data, val_label_keys=args.val_label_key,
            val_group_key=args.val_group_key,
            loop=_loop_config(args),
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
    if args.command in SSL_HELP:
        from training.loop import Interrupted
        from training.train_ssl import run as run_ssl

        try:
            run_ssl(_ssl_config(args, _where(parser, args.where)))
        except (ValueError, FileNotFoundError) as exc:  # bad data, backbone or options
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except Interrupted as exc:
            print(f"{exc}; continue with --resume", file=sys.stderr)
            return 130
    if args.command == "export":
        from training.export import export

        try:
            done = export(args.encoder, args.format, args.out)
        except (ValueError, FileNotFoundError, ImportError) as exc:  # SSL as open_clip, no onnx installed
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {', '.join(str(f) for f in done.files)}" + (
            f"\nopen_clip.add_model_config({str(args.out)!r}); open_clip.create_model_and_transforms("
            f"{done.model_name!r}, pretrained={str(done.files[1])!r})" if done.model_name else ""))
    if args.command == "eval":
        from training.eval_clip import DEFAULT_TEMPLATES, EvalConfig, format_table, plot, run, write_json

        if args.data is None and args.folder is None:
            parser.error("eval needs --data MANIFEST and/or --folder LABELLED_FOLDER")
        cfg = EvalConfig(
            encoders=args.encoder, data=args.data, image_key=args.image_key, caption_key=args.caption_key,
            label_keys=args.label_key, group_key=args.group_key, where=_where(parser, args.where),
            templates=tuple(args.template or DEFAULT_TEMPLATES), device=args.device, folder=args.folder,
            probe_key=args.probe_key, test_fraction=args.test_fraction, split_seed=args.split_seed,
            knn_ks=tuple(args.knn_k or (20,)), knn_temperature=args.knn_temperature, linear_wd=args.linear_wd,
            linear_iters=args.linear_iters, pixels=args.pixels,
        )
        try:
            results = run(cfg)
            print(format_table(results))
            if args.json:
                write_json(args.json, cfg, results)
            if args.plot:
                plot(results, args.plot)
        except (ValueError, FileNotFoundError, ImportError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return 0


def _backbone(parser: argparse.ArgumentParser, spec) -> dict | None:
    from training.backbones import parse_backbone

    if spec is None or isinstance(spec, dict):
        return spec
    try:
        return parse_backbone(spec)
    except ValueError as exc:
        parser.error(f"--image-backbone: {exc}")


def _where(parser: argparse.ArgumentParser, items: list[str]) -> dict[str, str]:
    try:
        return dict(w.split("=", 1) for w in items)
    except ValueError:
        parser.error("--where takes COLUMN=VALUE")


if __name__ == "__main__":
    sys.exit(main())
