"""An exported encoder evaluated by open_clip's own code, next to ``python -m training eval``.

    python bench/export_open_clip_eval.py --encoder data/encoder.safetensors [--data samples/emoji/metadata.jsonl]

1. ``python -m training eval --label-key category --label-key subcategory`` on the manifest: the
   project's zero-shot top-1 / top-5 (the reference, measured in this run).
2. ``python -m training export --format open_clip``, then open_clip alone: the model and its
   preprocessing from ``open_clip.create_model_and_transforms(NAME, pretrained=CHECKPOINT)``, the
   tokenizer from ``open_clip.get_tokenizer``, the classifier from ``open_clip.build_zero_shot_classifier``
   (same prompt templates), image features from ``model.encode_image``, and top-k counted here with
   ``torch.topk`` (open_clip_train's own ``zero_shot.accuracy`` raises a TypeError under numpy 2:
   ``float()`` of a 1-element array). Images are decoded as lookalike decodes them
   (transparency flattened onto white, ``training.images.to_rgb``), since open_clip's ``convert("RGB")``
   would drop the alpha channel of the emoji instead.

Writes bench/results/export_open_clip_eval.json; prints both tables and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import open_clip  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from bench.common import REPO, save  # noqa: E402
from training.eval_clip import DEFAULT_TEMPLATES  # noqa: E402
from training.images import to_rgb  # noqa: E402


class Manifest(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict], root: Path, key: str, classes: list[str], preprocess) -> None:
        self.rows, self.root, self.key, self.preprocess = rows, root, key, preprocess
        self.index = {c: i for i, c in enumerate(classes)}

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        r = self.rows[i]
        with Image.open(self.root / r["file"]) as im:
            return self.preprocess(to_rgb(im)), self.index[str(r[self.key])]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", type=Path, required=True)
    p.add_argument("--data", type=Path, default=REPO / "samples" / "emoji" / "metadata.jsonl")
    p.add_argument("--label-key", action="append", default=None, help="default: category and subcategory")
    args = p.parse_args()
    keys = args.label_key or ["category", "subcategory"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    with tempfile.TemporaryDirectory() as tmp:
        ours_json = Path(tmp) / "eval.json"
        eval_cmd = [sys.executable, "-m", "training", "eval", "--encoder", str(args.encoder), "--data", str(args.data),
                    *[a for k in keys for a in ("--label-key", k)], "--json", str(ours_json)]
        subprocess.run(eval_cmd, cwd=REPO, env=env, check=True)
        ours = next(iter(json.loads(ours_json.read_text())["results"].values()))

        out = Path(tmp) / "open_clip"
        export_cmd = [sys.executable, "-m", "training", "export", str(args.encoder), "--format", "open_clip",
                      "--out", str(out)]
        subprocess.run(export_cmd, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
        name = next(f.stem for f in out.glob("*.json") if f.name != "open_clip_config.json")
        open_clip.add_model_config(out)
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=str(out / "open_clip_model.safetensors"))
        model.eval()
        tokenizer = open_clip.get_tokenizer(name)

        rows = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
        theirs: dict[str, float] = {}
        for key in keys:
            classes = sorted({str(r[key]) for r in rows})
            with torch.inference_mode():
                classifier = open_clip.build_zero_shot_classifier(model, tokenizer, classes, list(DEFAULT_TEMPLATES),
                                                                  device="cpu")
            loader = torch.utils.data.DataLoader(Manifest(rows, args.data.parent, key, classes, preprocess),
                                                 batch_size=64)
            top1, top5, n = 0, 0, 0
            with torch.inference_mode():
                for images, target in loader:
                    logits = model.encode_image(images, normalize=True) @ classifier  # (B, classes)
                    hit = logits.topk(min(5, len(classes)), dim=1).indices == target[:, None]
                    top1, top5, n = top1 + int(hit[:, 0].sum()), top5 + int(hit.any(dim=1).sum()), n + len(target)
            top1, top5 = top1 / n, top5 / n
            theirs[f"zero-shot {key} top1 ({len(classes)} classes)"] = top1
            theirs[f"zero-shot {key} top5 ({len(classes)} classes)"] = top5

    print(f"\n{'metric':<44}{'training eval':>14}{'open_clip':>11}{'ratio':>8}")
    table = {}
    for metric, value in theirs.items():
        reference = ours[metric]
        ratio = value / reference if reference else float("nan")
        table[metric] = {"training_eval": reference, "open_clip": value, "ratio": ratio}
        print(f"{metric:<44}{reference:>14.4f}{value:>11.4f}{ratio:>8.3f}")
    path = save("export_open_clip_eval", {
        "encoder": str(args.encoder), "data": str(args.data), "images": len(rows), "templates": list(DEFAULT_TEMPLATES),
        "commands": {"reference": " ".join(eval_cmd[1:]), "export": " ".join(export_cmd[1:])},
        "open_clip": open_clip.__version__, "results": table})
    print(f"wrote {path}")
    return 0 if all(abs(r["open_clip"] - r["training_eval"]) < 1e-9 for r in table.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
