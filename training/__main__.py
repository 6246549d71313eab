"""``python -m training``: train and evaluate encoders.

    python -m training clip --data MANIFEST --image-key KEY --caption-key KEY --out ENCODER
    python -m training simclr --data FOLDER_OR_MANIFEST --out ENCODER     (also: moco, rotnet)
    (one sub-command per module of training/methods, its options from its config's fields)
    python -m training eval --encoder ENCODER [--encoder ...] --data MANIFEST | --folder LABELLED_FOLDER
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from core.malloc import retain_freed_memory
from training.loop import LoopConfig
from training.method import Method
from training.methods import registered
from training.options import column_values, declared, field_values


def _loop_flags(p: argparse.ArgumentParser, *, grad_clip: float | None = LoopConfig.grad_clip,
                steps: int = LoopConfig.steps, lr: float = LoopConfig.lr, weight_decay: float = LoopConfig.weight_decay,
                warmup: int = LoopConfig.warmup_steps, precision: str = "auto") -> None:
    """The options of ``training.loop`` every method shares; their defaults are the method's (``loop_defaults``)."""
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
    p.add_argument("--checkpoint-every", type=int, default=0, help="steps between checkpoints (0: end/interrupt)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--tensorboard", type=Path, default=None, metavar="DIR",
                   help="also write the logged steps as TensorBoard scalars to DIR (needs tensorboard)")
    p.add_argument("--eval-every", type=int, default=0, help="steps between monitor runs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")


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


def _method_parser(sub, method: Method) -> None:
    """A method's sub-command: its config's options (``training.options``), then the shared ones."""
    p = sub.add_parser(method.name, help=method.help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--recipe", type=Path, default=None,
                   help="JSON file of option defaults (training/recipes/*.json); flags given here override it")
    for d in declared(method.config):
        kwargs = dict(d.kwargs)
        if kwargs.get("action") == "switch":
            kwargs["action"] = argparse.BooleanOptionalAction
        p.add_argument(d.flag, dest=d.dest, **kwargs)
    _augment_flags(p)
    _loop_flags(p, **method.loop_defaults)


def config_from_args(method: Method, args: argparse.Namespace):
    """The method's config from its parsed sub-command (what ``python -m training METHOD ...`` trains with)."""
    return method.configure({**field_values(method.config, vars(args)), "loop": _loop_config(args)},
                            _augment_overrides(args))


def _train(method: Method, args: argparse.Namespace) -> int:
    from training.loop import Interrupted
    from training.runner import run

    try:
        cfg = config_from_args(method, args)
        run(cfg)
    except (ValueError, FileNotFoundError) as exc:  # bad options, data, manifest, model or backbone; missing files
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(f"{exc}; continue with --resume", file=sys.stderr)
        return 130
    return 0


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
    p.add_argument("--knn-k", type=int, action="append", default=None,
                   help="k of the k-NN vote (repeatable; default 20)")
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
    methods = registered()
    for method in methods.values():
        _method_parser(sub, method)
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

    if args.command in methods:
        return _train(methods[args.command], args)
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


def _where(parser: argparse.ArgumentParser, items: list[str]) -> dict[str, str]:
    try:
        return column_values(items)
    except ValueError:
        parser.error("--where takes COLUMN=VALUE")


if __name__ == "__main__":
    sys.exit(main())
