"""Encoders that leave the project: an encoder file as an open_clip model or as ONNX graphs.

``open_clip`` (CLIP encoders with open_clip's own towers) writes, into OUT:

    MODEL.json                    the model config: ``open_clip.add_model_config(OUT)`` registers MODEL
    open_clip_model.safetensors   the weights: ``create_model_and_transforms(MODEL, pretrained=this file)``
    open_clip_config.json         config + preprocessing, so ``create_model_and_transforms("local-dir:OUT")``
                                  needs nothing else (the layout of open_clip models on model hubs)

``onnx`` writes ``image.onnx`` (pixels float32 (B, 3, H, W), already preprocessed -> L2-normalised
(B, dim)), for CLIP also ``text.onnx`` (token ids int64 (B, context) -> L2-normalised (B, dim)), and
``preprocess.json``: the input size, mean, std, resize mode and interpolation, and for CLIP the
tokenizer (open_clip's CLIP BPE, whose vocabulary file is copied beside it, or a Hugging Face name).
Image-only encoders (SimCLR, MoCo, RotNet) export as ONNX image graphs only.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from training.encoder import Encoder, load_encoder

FORMATS = ("open_clip", "onnx")
OPSET = 18


@dataclass(frozen=True)
class Exported:
    format: str
    files: list[Path]
    model_name: str | None = None  # open_clip: the name that add_model_config registers


class _Normalised(torch.nn.Module):
    """One tower of an encoder with the L2 normalisation that ``Encoder`` applies after it."""

    def __init__(self, tower, owner: torch.nn.Module | None = None) -> None:
        super().__init__()
        self.owner = owner if owner is not None else tower  # registers the weights with this module
        self.tower = tower

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.tower(x).float(), dim=-1)


def _open_clip_preprocess(encoder: Encoder) -> dict[str, Any]:
    p = encoder.preprocess
    return {"size": p.size, "mean": list(p.mean), "std": list(p.std), "interpolation": p.interpolation,
            "resize_mode": p.resize_mode}


def export_open_clip(encoder: Encoder, out: Path) -> Exported:
    arch = encoder.meta.get("arch") or {}
    if encoder.kind != "clip" or "model_cfg" not in arch:
        raise ValueError(f"a {encoder.kind} encoder has no open_clip form; export it with --format onnx")
    if "image_tower" in arch:
        raise ValueError("this CLIP's image tower is an image-only backbone of this project, which open_clip "
                         "cannot build; export it with --format onnx")
    name = arch.get("model_name") or "lookalike"
    out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    weights = out / "open_clip_model.safetensors"
    save_file({k: v.detach().cpu().contiguous() for k, v in encoder.model.state_dict().items()}, str(weights))
    weights.chmod(0o644)  # safetensors writes 0600; an export is meant to be shared
    config = out / f"{name}.json"
    config.write_text(json.dumps(arch["model_cfg"], indent=2))
    hub = out / "open_clip_config.json"
    hub.write_text(json.dumps({"model_cfg": arch["model_cfg"], "preprocess_cfg": _open_clip_preprocess(encoder),
                               "lookalike": {"fingerprint": encoder.fingerprint, "model_name": name}}, indent=2))
    return Exported("open_clip", [config, weights, hub], name)


def _tokenizer_description(encoder: Encoder, out: Path) -> dict[str, Any]:
    import open_clip

    tok = encoder.tokenizer
    desc: dict[str, Any] = {"context_length": int(getattr(tok, "context_length", 77))}
    if isinstance(tok, open_clip.SimpleTokenizer):
        vocab = out / "bpe_simple_vocab_16e6.txt.gz"
        shutil.copyfile(open_clip.tokenizer.default_bpe(), vocab)
        desc.update(type="clip_bpe", vocab=vocab.name, lower_case=True,
                    start_token=tok.sot_token_id, end_token=tok.eot_token_id, pad_token=0,
                    how="lower-case and squeeze whitespace, byte-level BPE of the vocab file, then "
                        "[start] tokens [end], cut or zero-padded to context_length (the end token kept)")
    else:
        desc.update(type="huggingface", name=getattr(tok, "tokenizer_name", None) or
                    (encoder.meta.get("tokenizer") or {}).get("model_name"))
    return desc


def _onnx(module: torch.nn.Module, example: torch.Tensor, path: Path, input_name: str, output_name: str) -> None:
    batch = torch.export.Dim("batch", min=1)
    # the exporter's graph passes log each rewrite at INFO: chatter for whoever runs the command
    logging.getLogger("onnx_ir").setLevel(logging.WARNING)
    torch.onnx.export(module.eval(), (example,), str(path), input_names=[input_name], output_names=[output_name],
                      dynamic_shapes=({0: batch},), opset_version=OPSET, dynamo=True, external_data=False,
                      verbose=False)


def export_onnx(encoder: Encoder, out: Path) -> Exported:
    out.mkdir(parents=True, exist_ok=True)
    size = encoder.preprocess.size
    h, w = (size, size) if isinstance(size, int) else size
    owner = encoder.model if encoder.model is not None else encoder.image_tower
    files = [out / "image.onnx"]
    with torch.no_grad():
        _onnx(_Normalised(encoder.image_tower, owner), torch.zeros(2, 3, h, w), files[0], "pixels", "image_embeds")
        described: dict[str, Any] = {
            "format": "lookalike-onnx/1", "kind": encoder.kind, "dim": encoder.dim,
            "fingerprint": encoder.fingerprint, "normalised": True,
            "image": {"file": "image.onnx", "input": "pixels", "output": "image_embeds",
                      "preprocess": {**_open_clip_preprocess(encoder), "channels": "RGB", "scale": 1 / 255,
                                     "how": "resize (shortest side to size, or squash with resize_mode "
                                            "'squash'), centre crop to size, RGB float in [0, 1], then "
                                            "(x - mean) / std per channel; NCHW float32"}},
        }
        if encoder.can_encode_text:
            tokens = encoder.tokenizer(["a photo", "two words"])
            files.append(out / "text.onnx")
            _onnx(_Normalised(encoder.text_tower, owner), tokens, files[-1], "input_ids", "text_embeds")
            described["text"] = {"file": "text.onnx", "input": "input_ids", "output": "text_embeds",
                                 "tokenizer": _tokenizer_description(encoder, out)}
            described["logit_scale"] = encoder.logit_scale
            if described["text"]["tokenizer"].get("vocab"):
                files.append(out / described["text"]["tokenizer"]["vocab"])
    meta = out / "preprocess.json"
    meta.write_text(json.dumps(described, indent=2))
    return Exported("onnx", [*files, meta])


def export(encoder_path: str | Path, fmt: str, out: str | Path) -> Exported:
    """Export the encoder at ``encoder_path`` (a file or ``open_clip:...``) in ``fmt`` into folder ``out``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; one of {', '.join(FORMATS)}")
    encoder = load_encoder(encoder_path, "cpu")
    return (export_open_clip if fmt == "open_clip" else export_onnx)(encoder, Path(out))
