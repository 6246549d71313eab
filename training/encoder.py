"""The encoder artefact: one file that training writes and everything else reads.

File format (``lookalike-encoder/1``): a safetensors file. Its tensors are the
model's weights; its string metadata holds one JSON document under the key
``lookalike`` with

    format       "lookalike-encoder/1"
    kind         "clip", or the image-only method that made it: "simclr" | "moco" | "rotnet" | ...
    arch         how to rebuild the network (for CLIP: open_clip model name + full config, and
                 "image_tower": {"backbone": spec, ...} when an image-only encoder's backbone
                 replaced the open_clip image tower;
                 for the image-only kinds: {"backbone": spec of ``training.backbones``})
    preprocess   size, mean, std, interpolation, resize_mode
    dim          embedding dimension
    tokenizer    how to tokenise text (CLIP only)
    run          a summary of the run that made it (free-form JSON)
    fingerprint  sha256 over the architecture and the weights

safetensors never executes code on load, so an encoder file may come from anyone.

Besides such files, ``load_encoder`` accepts pretrained open_clip models:
``open_clip:MODEL/TAG`` (downloads where there is internet) or
``open_clip:MODEL/PATH`` for a local open_clip checkpoint file (works offline).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from training.images import to_rgb

FORMAT = "lookalike-encoder/1"
OPEN_CLIP_PREFIX = "open_clip:"
IN_TRAINING = "(in training)"  # the fingerprint of an Encoder around a model still in training


class EncoderError(ValueError):
    """An encoder file that cannot be used: missing, malformed, tampered with."""


class NoTextTower(EncoderError):
    """Raised by ``encode_texts`` on an encoder that only embeds images."""


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the encoder's input tensor (evaluation mode)."""

    size: int | list[int]
    mean: list[float]
    std: list[float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"

    def _open_clip(self, is_train: bool = False, aug_cfg: dict | None = None):
        import open_clip

        return open_clip.image_transform(
            self.size,
            is_train=is_train,
            mean=tuple(self.mean),
            std=tuple(self.std),
            resize_mode=self.resize_mode,
            interpolation=self.interpolation,
            aug_cfg=aug_cfg,
        )

    def transform(self, is_train: bool = False, aug_cfg: dict | None = None) -> Callable:
        """A callable PIL image -> float tensor (3, H, W); open_clip's own transform."""
        inner = self._open_clip(is_train, aug_cfg)
        return lambda image: inner(to_rgb(image))

    def split(self) -> tuple[Callable[[Image.Image], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]] | None:
        """The evaluation transform in two halves: per image, everything up to 8-bit pixels (uint8
        (3, H, W)); per batch, ToTensor's scaling and Normalize, the same float32 arithmetic bit for
        bit, done once for a whole batch. (The indexing job runs the first half in its decode
        workers: ToTensor and Normalize were a third of their time, and uint8 ships 4x fewer bytes.)
        None when open_clip's transform does not end in ToTensor, Normalize."""
        from torchvision.transforms import Compose, Normalize, PILToTensor, ToTensor

        *head, to_tensor, normalize = self._open_clip().transforms
        if not (isinstance(to_tensor, ToTensor) and isinstance(normalize, Normalize)):
            return None
        pixels = Compose([*head, PILToTensor()])
        mean = torch.as_tensor(normalize.mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.as_tensor(normalize.std, dtype=torch.float32).view(-1, 1, 1)

        def per_batch(batch: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) uint8 -> float32, on batch's device
            return batch.to(torch.float32).div(255).sub_(mean.to(batch.device)).div_(std.to(batch.device))

        return (lambda image: pixels(to_rgb(image))), per_batch


def fingerprint(arch: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over the canonical JSON of ``arch`` and every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256()
    h.update(json.dumps(arch, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_encoder(
    path: str | os.PathLike,
    *,
    kind: str,
    arch: dict[str, Any],
    state_dict: dict[str, torch.Tensor],
    preprocess: Preprocess,
    dim: int,
    tokenizer: dict[str, Any] | None = None,
    run: dict[str, Any] | None = None,
) -> str:
    """Write an encoder file atomically (temp file + rename); returns its fingerprint."""
    from safetensors.torch import save_file

    tensors = {name: t.detach().cpu().contiguous().clone() for name, t in state_dict.items()}
    fp = fingerprint(arch, tensors)
    meta = {
        "format": FORMAT,
        "kind": kind,
        "arch": arch,
        "preprocess": asdict(preprocess),
        "dim": int(dim),
        "tokenizer": tokenizer,
        "run": run or {},
        "fingerprint": fp,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"lookalike": json.dumps(meta)})
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; an encoder file is meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return fp


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON header of an encoder file, without loading its weights."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("lookalike")
    except FileNotFoundError:
        raise EncoderError(f"encoder file not found: {path}") from None
    except Exception as exc:  # safetensors raises its own error types for garbage
        raise EncoderError(f"{path} is not a lookalike encoder file ({exc})") from None
    if raw is None:
        raise EncoderError(f"{path} is a safetensors file but has no lookalike metadata")
    meta = json.loads(raw)
    if meta.get("format") != FORMAT:
        raise EncoderError(f"{path}: unsupported encoder format {meta.get('format')!r}, expected {FORMAT!r}")
    return meta


@dataclass
class Encoder:
    """A loaded encoder: images (and, for CLIP, texts) to L2-normalised float32 vectors."""

    kind: str
    dim: int
    fingerprint: str
    preprocess: Preprocess
    image_tower: Callable[[torch.Tensor], torch.Tensor]  # (B, 3, H, W) -> (B, dim), unnormalised
    text_tower: Callable[[torch.Tensor], torch.Tensor] | None = None  # (B, ctx) tokens -> (B, dim)
    tokenizer: Callable[[Sequence[str]], torch.Tensor] | None = None
    logit_scale: float = 100.0
    model: torch.nn.Module | None = None  # the network whose weights the file holds (CLIP model; a backbone)
    meta: dict[str, Any] = field(default_factory=dict)
    device: torch.device = torch.device("cpu")
    batch_size: int = 64

    def __post_init__(self) -> None:
        self._transform = self.preprocess.transform(is_train=False)
        self._halves = self.preprocess.split()

    @property
    def can_encode_text(self) -> bool:
        return self.text_tower is not None

    @property
    def source(self) -> str:
        return self.meta.get("source", "")

    def _autocast(self):
        """bf16 (or fp16) autocast on GPUs, where it doubles throughput; full precision on CPUs.
        Vectors come out as float32 either way (``_normalise``)."""
        if self.device.type != "cuda":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    def image_tensor(self, image: Image.Image) -> torch.Tensor:
        """One PIL image -> its preprocessed (3, H, W) tensor."""
        return self._transform(image)

    def image_pixels(self, image: Image.Image) -> torch.Tensor:
        """One PIL image -> the first half of its preprocessing (``Preprocess.split``): uint8 (3, H, W)
        pixels, or the finished float tensor when the transform cannot be split. A stack of these
        becomes the encoder's input through ``tensors_from_pixels``."""
        return self._halves[0](image) if self._halves else self._transform(image)

    def tensors_from_pixels(self, batch: torch.Tensor) -> torch.Tensor:
        """A stack of ``image_pixels`` -> what ``image_tensor`` would have given, stacked, bit for bit,
        on the encoder's device (a GPU receives 8-bit pixels, a quarter of the bytes, and normalises
        them itself)."""
        if not self._halves or batch.dtype != torch.uint8:
            return batch
        return self._halves[1](batch.to(self.device, non_blocking=True))

    @torch.inference_mode()
    def encode_tensors(self, batch: torch.Tensor) -> np.ndarray:
        """Already preprocessed images (B, 3, H, W) -> float32 (B, dim), L2-normalised."""
        out = []
        for start in range(0, len(batch), self.batch_size):
            x = batch[start : start + self.batch_size].to(self.device, non_blocking=True)
            with self._autocast():
                out.append(_normalise(self.image_tower(x)))
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return torch.cat(out).float().cpu().numpy()

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """PIL images of any mode and size -> float32 (N, dim), L2-normalised."""
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.encode_tensors(torch.stack([self.image_tensor(im) for im in images]))

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Strings -> float32 (N, dim), L2-normalised. Raises NoTextTower for image-only encoders."""
        if self.text_tower is None or self.tokenizer is None:
            raise NoTextTower(f"this {self.kind} encoder has no text tower: it embeds images only")
        if isinstance(texts, str):
            raise TypeError("encode_texts takes a sequence of strings, not one string")
        out = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(list(texts[start : start + self.batch_size])).to(self.device)
            with self._autocast():
                out.append(_normalise(self.text_tower(tokens)))
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return torch.cat(out).float().cpu().numpy()

    @torch.inference_mode()
    def zero_shot_weights(self, labels: Sequence[str], templates: Sequence[str]) -> np.ndarray:
        """Class embeddings (L, dim): each label averaged over its prompt templates (open_clip's helper)."""
        if self.model is None or self.tokenizer is None:
            raise NoTextTower(f"this {self.kind} encoder has no text tower: zero-shot classification needs one")
        from open_clip import build_zero_shot_classifier

        w = build_zero_shot_classifier(
            self.model, self.tokenizer, list(labels), list(templates),
            num_classes_per_batch=max(1, self.batch_size // max(1, len(templates))),
            device=self.device,
        )  # (dim, L)
        return w.T.float().cpu().numpy()


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1)


def load_encoder(path_or_name: str | os.PathLike, device: str | torch.device = "cpu") -> Encoder:
    """Load an encoder file written by ``python -m training``, or an ``open_clip:MODEL/TAG_OR_PATH``."""
    device = torch.device(device)
    spec = str(path_or_name)
    if spec.startswith(OPEN_CLIP_PREFIX):
        return _load_open_clip(spec[len(OPEN_CLIP_PREFIX):], device)
    return _load_file(Path(spec), device)


def _load_file(path: Path, device: torch.device) -> Encoder:
    from safetensors.torch import load_file

    meta = read_metadata(path)
    state_dict = load_file(str(path))
    actual = fingerprint(meta["arch"], state_dict)
    if actual != meta["fingerprint"]:
        raise EncoderError(
            f"{path}: weights do not match the recorded fingerprint "
            f"({actual[:12]} != {meta['fingerprint'][:12]}); the file is damaged or was edited"
        )
    # CLIP, or an image-only method's backbone (any method's name: a new one needs nothing here)
    builder = _build_clip if meta["kind"] == "clip" else _build_image_only if "backbone" in meta["arch"] else None
    if builder is None:
        raise EncoderError(f"{path}: unknown encoder kind {meta['kind']!r}")
    meta["source"] = str(path)
    return builder(meta, state_dict, device)


def _build_clip(meta: dict[str, Any], state_dict: dict[str, torch.Tensor], device: torch.device) -> Encoder:
    from training.clip_model import build_model, build_tokenizer

    arch = meta["arch"]
    model = build_model(arch["model_cfg"])
    if "image_tower" in arch:  # an image-only encoder's backbone as the image tower (LiT-style)
        from training.clip_model import attach_backbone_tower

        attach_backbone_tower(model, arch["image_tower"]["backbone"], int(meta["dim"]), meta["preprocess"])
    model.load_state_dict(state_dict, strict=True)
    return _clip_encoder(model, build_tokenizer(arch["model_name"], arch["model_cfg"]), meta, device)


def _clip_encoder(model: torch.nn.Module, tokenizer, meta: dict[str, Any], device: torch.device) -> Encoder:
    return clip_encoder(model.to(device).eval(), tokenizer, Preprocess(**meta["preprocess"]), int(meta["dim"]), device,
                        meta)


def clip_encoder(model: torch.nn.Module, tokenizer, preprocess: Preprocess, dim: int, device: torch.device,
                 meta: dict[str, Any] | None = None) -> Encoder:
    """An Encoder around an open_clip model: a loaded file's (``meta``: its header) or one in training."""
    meta = meta if meta is not None else {}
    return Encoder(
        kind="clip",
        dim=dim,
        fingerprint=meta.get("fingerprint", IN_TRAINING),
        preprocess=preprocess,
        image_tower=model.encode_image,
        text_tower=model.encode_text,
        tokenizer=tokenizer,
        logit_scale=float(model.logit_scale.detach().exp().clamp(max=100).item()),
        model=model,
        meta=meta,
        device=device,
    )


def _load_open_clip(spec: str, device: torch.device) -> Encoder:
    import open_clip

    from training.clip_model import build_tokenizer, model_config, preprocess_of

    model_name, _, pretrained = spec.partition("/")
    model = open_clip.create_model(model_name, pretrained=pretrained or None, require_pretrained=bool(pretrained))
    arch = {"model_name": model_name, "model_cfg": model_config(model_name)}
    state_dict = model.state_dict()
    meta = {
        "format": FORMAT,
        "kind": "clip",
        "arch": arch,
        "preprocess": preprocess_of(model),
        "dim": int(arch["model_cfg"]["embed_dim"]),
        "tokenizer": {"type": "open_clip", "model_name": model_name},
        "run": {"pretrained": pretrained},
        "fingerprint": fingerprint(arch, state_dict),
        "source": OPEN_CLIP_PREFIX + spec,
    }
    return _clip_encoder(model, build_tokenizer(model_name, arch["model_cfg"]), meta, device)


def _build_image_only(meta: dict[str, Any], state_dict: dict[str, torch.Tensor], device: torch.device) -> Encoder:
    """Image-only encoders (SimCLR, MoCo, RotNet, ...): a backbone (its heads were dropped when saving),
    no text tower."""
    from training.backbones import build_backbone

    backbone = build_backbone(meta["arch"]["backbone"])
    backbone.load_state_dict(state_dict, strict=True)
    return backbone_encoder(backbone.to(device).eval(), meta["kind"], Preprocess(**meta["preprocess"]), device, meta)


def backbone_encoder(backbone: torch.nn.Module, kind: str, preprocess: Preprocess, device: torch.device,
                     meta: dict[str, Any] | None = None, batch_size: int = 64) -> Encoder:
    """An image-only Encoder around a backbone: a loaded file's (``meta``: its header) or one in training."""
    meta = meta if meta is not None else {}
    return Encoder(
        kind=kind,
        dim=int(meta.get("dim", backbone.out_dim)),
        fingerprint=meta.get("fingerprint", IN_TRAINING),
        preprocess=preprocess,
        image_tower=backbone,
        model=backbone,
        meta=meta,
        device=device,
        batch_size=batch_size,
    )
