"""``python -m training clip``: train a CLIP encoder on image-caption pairs and write an encoder file.

The pairs come from a JSONL/CSV manifest (exact resume, bad files counted) or from
webdataset tar shards (``training.shards``: streamed, shuffled, decoded in workers).

The step is a thin task joining an open_clip model and a contrastive loss. Batches of two
tensors, (images, tokens), train plain CLIP with open_clip's ``ClipLoss`` (or ``SigLipLoss``,
``loss="siglip"``: Zhai et al. 2023's pairwise sigmoid, which needs a model with a learnt logit
bias, ``init_logit_bias`` in its config; ``make_model`` adds one).

Batches of four, (view_1, view_2, tokens, groups) from ``training.data.ImageTextDataset(views=2)``,
train the data-efficient form: both views of every item meet the texts in a multi-positive CLIP loss
(images and captions of the same group are positives, not negatives), and, with ``ssl_weight > 0``,
a supervised-contrastive term on the image side alone pulls the views of a group together (SLIP,
Mu et al. 2022, with SupCon's positives): by default on the backbone's features through a projection
head that the encoder file leaves out, as SLIP does; ``ssl_on="embedding"`` on the image embedding
itself, the space that retrieval searches.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from open_clip.loss import SigLipLoss
from torch import nn
from torch.utils.data import DataLoader

from core.distributed import DistInfo
from core.shards import is_shards, shard_urls
from training.augment import AugmentConfig, simclr_transform
from training.batch_augment import BatchAugment
from training.clip_model import (
    BackboneTower,
    attach_backbone_tower,
    build_model,
    build_tokenizer,
    model_config,
    preprocess_of,
)
from training.data import ROW, GroupedCollate, ImageTextDataset, KeyedImages
from training.distributed import unwrap
from training.encoder import Preprocess, clip_encoder, load_encoder
from training.evaluate import text_to_image_recall
from training.loop import keyed_loader
from training.losses import multi_positive_clip, supcon
from training.method import DEFAULT_DEVICE, Job, Method, RunFiles
from training.options import backbone_spec, option
from training.shards import DecodePair, first_pairs, shard_pipeline

log = logging.getLogger(__name__)

# The image side's augmentation: mild crops and brightness/contrast jitter stand in for another artist's
# drawing of the same thing; hue, saturation and grayscale would erase the colours that tell emoji apart
# (bench/README.md, clip_quality). No flips by default: captions may say "left" or "right".
CLIP_AUGMENT = dict(min_scale=0.6, flip_prob=0.0, jitter_prob=0.8, jitter_strength=0.5, jitter_saturation=False,
                    jitter_hue=False, grayscale_prob=0.0, blur_prob=0.0)
NO_AUGMENT = AugmentConfig(min_scale=1.0, flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)
MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clamps the learnt temperature at 1/100


@dataclass
class ClipTrainConfig(RunFiles):
    data: Path = option(help="JSONL or CSV manifest (image paths relative to it), or webdataset shards: "
                             "'DIR/{00000..00099}.tar' or a folder of .tar files")
    out: Path = option(help="encoder file to write (.safetensors)")
    image_key: str = option("file", "manifest column with the image path; for shards the image extension(s), "
                                    "e.g. 'jpg;png'")
    caption_key: str = option("caption", "manifest column with the caption; for shards the caption extension, "
                                         "e.g. 'txt'")
    model: str = option("lookalike-cnn", "open_clip model name (lookalike-cnn: a small CNN image tower at 32 px for "
                                         "CPUs and small data, its 4x4 feature map kept as a grid; lookalike-tiny, "
                                         "lookalike-micro: small ViT configs)")
    image_backbone: dict | None = option(None, "replace the model's image tower by this backbone: "
                                               "small-cnn[,width=32,depth=4,grid=4] | resnet18[,small_stem=true] | "
                                               "timm:MODEL | a JSON object", parse=backbone_spec)
    pretrained: str | None = option(None, "start from these weights: an open_clip tag (downloads) or a local "
                                          "checkpoint file")
    lock_image: bool = option(False, "freeze the image tower (LiT-style)")
    lock_text: bool = option(False, "freeze the text tower")
    image_tower: Path | None = option(None, "use this image-only encoder file (simclr/moco/rotnet) as the image "
                                            "tower, with a learnt projection; with --lock-image its backbone stays "
                                            "frozen (LiT)", metavar="ENCODER")
    loss: str = option("clip", "clip: softmax contrastive (ClipLoss); siglip: pairwise sigmoid (SigLipLoss)",
                       choices=("clip", "siglip"))
    image_size: int | None = option(None, "override the model's input size")
    # The data-efficient form: two views per item, captions / groups as positives,
    # an image-only SupCon term beside CLIP's (SLIP). 1: plain CLIP on (image, caption) pairs.
    views: int = option(2, "2: two augmented views per item, the multi-positive CLIP loss and the image-only term; "
                           "1: plain CLIP on (image, caption) pairs with --loss", choices=(1, 2))
    multi_positive: bool = option(True, "items sharing a caption (or --group-key) are positives in both terms; "
                                        "--no-multi-positive: only an item's own views and caption are")
    group_key: str | None = option(None, "manifest column: rows with the same value are positives")
    ssl_weight: float = option(1.0, "weight of the image-only supervised-contrastive term beside CLIP's loss "
                                    "(SLIP; 0: off)")
    ssl_temperature: float = option(0.1, "temperature of that term")
    # (bench/README.md, clip_quality: embedding moved (a) +0.05 both ways, but its whole-set run took
    # 16.5 min, over the 15-min budget; not yet timed beside the default in one session)
    ssl_on: str = option("backbone", "where that term looks: backbone: the backbone's features through a "
                                     "projection head (SLIP's form); embedding: the image embedding that "
                                     "retrieval searches", choices=("backbone", "embedding"))
    ssl_dim: int = option(128, "output width of that projection head (--ssl-on backbone)")  # (not in the file)
    caption_variant_keys: list[str] = option(factory=list, flag="--caption-variant-key", dest="caption_variant_key",
                                             metavar="COLUMN", help="manifest column of more captions per row (a "
                                             "string or a list); one is drawn per step")
    # None: open_clip's training transform; on the command line --augment / --no-augment with the
    # augmentation flags (``configure``)
    augment: AugmentConfig | None = option(factory=lambda: AugmentConfig(**CLIP_AUGMENT), cli_default=True,
                                           action="switch", help="the image side's style augmentation (crops, "
                                           "brightness and contrast jitter); --no-augment: open_clip's training "
                                           "transform")
    cache_mb: float = option(1024.0, "decode the manifest's images into memory when they fit in this many MiB "
                                     "(0: never)", cli_default=1024)
    channels_last: bool | None = option(None, "NHWC image tower (default: for convolutional towers)")
    batch_size: int = option(128, "per process", cli_default=256)
    workers: int = option(2, "DataLoader worker processes")
    seed: int = option(0)
    device: str = option("cpu", cli_default=DEFAULT_DEVICE)
    eval_limit: int = 4000  # images used for the before/after recall report
    val_data: Path | None = option(None, "validation manifest for the periodic monitor")
    val_label_keys: list[str] = option(factory=list, flag="--val-label-key", dest="val_label_key",
                                       help="zero-shot column of --val-data")
    val_group_key: str | None = option(None, "image->image group column of --val-data")


@dataclass
class ClipTrainResult:
    fingerprint: str | None
    recall_untrained: dict[int, float] | None
    recall_trained: dict[int, float]
    history: list[dict[str, float]]
    seconds: float


def make_model(cfg: ClipTrainConfig) -> tuple[torch.nn.Module, dict, dict]:
    """(model, its open_clip config, the ``arch`` record of the encoder file)."""
    model_cfg = model_config(cfg.model)
    if cfg.image_backbone:
        model_cfg["image_backbone"] = dict(cfg.image_backbone)
    if cfg.image_tower:
        model_cfg.pop("image_backbone", None)
    if cfg.image_size:
        model_cfg["vision_cfg"]["image_size"] = cfg.image_size
    if cfg.loss == "siglip" and model_cfg.get("init_logit_bias") is None and not cfg.pretrained:
        # SigLIP's initialisation: t = 10, b = -10, so that the many negatives start near probability 0
        model_cfg.update(init_logit_scale=math.log(10.0), init_logit_bias=-10.0)
    if cfg.pretrained:
        model = open_clip.create_model(cfg.model, pretrained=cfg.pretrained, require_pretrained=True,
                                       force_image_size=cfg.image_size)
    else:
        model = build_model(model_cfg)
    arch = {"model_name": cfg.model, "model_cfg": model_cfg}
    if cfg.image_tower:
        arch["image_tower"] = _attach_image_encoder(model, cfg.image_tower, int(model_cfg["embed_dim"]), cfg.lock_image)
    elif cfg.lock_image and isinstance(model.visual, BackboneTower):
        model.visual.lock()
    elif cfg.lock_image:
        model.lock_image_tower(unlocked_groups=0, freeze_bn_stats=True)
    if cfg.lock_text:
        model.lock_text_tower(unlocked_layers=0)
    return model, model_cfg, arch


def _attach_image_encoder(model: torch.nn.Module, path: Path, embed_dim: int, locked: bool) -> dict:
    """Make an image-only encoder file's backbone (with its weights and preprocessing) the image tower."""
    source = load_encoder(path)
    if source.kind == "clip" or "backbone" not in source.meta.get("arch", {}):
        raise ValueError(f"--image-tower takes an image-only encoder file (simclr, moco, rotnet); {path} is "
                         f"a {source.kind} encoder")
    spec = source.meta["arch"]["backbone"]
    tower = attach_backbone_tower(model, spec, embed_dim, asdict(source.preprocess), locked=locked)
    tower.backbone.load_state_dict(source.image_tower.state_dict())
    return {"backbone": spec, "from": source.kind, "from_fingerprint": source.fingerprint, "locked": locked}


def _side(size: int | list[int]) -> int:
    return int(size) if isinstance(size, int) else int(min(size))


class ClipTrainingModel(nn.Module):
    """An open_clip model plus what only training needs: the vectors of the image-only SSL term.

    ``forward(images (Bi, 3, H, W), tokens (Bt, ctx))`` -> (image embeddings (Bi, d), text embeddings
    (Bt, d), both L2-normalised, logit scale (), SSL vectors or None). ``ssl="embedding"``: the SSL
    vectors are the image embeddings themselves. ``ssl="backbone"`` with ``ssl_dim``: a projection head's
    (Bi, ssl_dim) outputs, the head reading the backbone's features when the tower has a trainable
    backbone (``BackboneTower``), else the tower's output (a locked tower's projection still trains, so
    the term still has something to move). ``ssl=None``: no SSL vectors.
    """

    def __init__(self, clip: nn.Module, ssl: str | None = None, ssl_dim: int = 128, ssl_hidden: int = 512) -> None:
        super().__init__()
        if ssl not in (None, "embedding", "backbone"):
            raise ValueError(f"ssl: None, 'embedding' or 'backbone', not {ssl!r}")
        self.clip = clip
        self.ssl = ssl
        self.ssl_head = None
        if ssl == "backbone":
            from training.methods.simclr import ProjectionHead

            width = clip.visual.backbone.out_dim if self._backbone_features() else int(clip.text_projection.shape[1])
            self.ssl_head = ProjectionHead(width, ssl_hidden, ssl_dim)

    def _backbone_features(self) -> bool:
        """Whether the SSL head reads the backbone's features (a trainable BackboneTower) or the tower's output."""
        visual = self.clip.visual
        return hasattr(visual, "backbone") and not getattr(visual, "locked", False)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor):
        visual = self.clip.visual
        if self._backbone_features():
            features = visual.backbone(images)  # (Bi, width)
            image = visual.proj(features)
        else:
            image = features = visual(images)
        text = self.clip.encode_text(tokens, normalize=True)
        image = F.normalize(image, dim=-1)
        ssl = self.ssl_head(features) if self.ssl == "backbone" else image if self.ssl == "embedding" else None
        return image, text, self.clip.logit_scale.exp(), ssl


@dataclass
class ClipMethod:
    model: torch.nn.Module  # an open_clip model (2-tensor batches) or a ClipTrainingModel (4-tensor batches)
    loss: open_clip.ClipLoss | SigLipLoss | None
    rank: int = 0
    world_size: int = 1
    ssl_weight: float = 0.0
    ssl_temperature: float = 0.1
    channels_last: bool = False  # feed the image tower NHWC batches (its weights converted by the caller)

    @classmethod
    def create(cls, model: torch.nn.Module, rank: int = 0, world_size: int = 1, loss: str = "clip",
               **options) -> ClipMethod:
        """``loss``: clip, siglip, or multi-positive (for ``ClipTrainingModel`` and 4-tensor batches)."""
        if loss == "multi-positive":
            return cls(model=model, loss=None, rank=rank, world_size=world_size, **options)
        if loss == "siglip":
            if getattr(unwrap(model), "logit_bias", None) is None:
                raise ValueError("the SigLIP loss needs a model with a logit bias (init_logit_bias in its config)")
            # SigLIP exchanges text features with the neighbouring ranks; no all-gather of the whole batch.
            return cls(model=model, loss=SigLipLoss(rank=rank, world_size=world_size), **options)
        if loss != "clip":
            raise ValueError(f"unknown loss {loss!r}: clip, siglip or multi-positive")
        # local_loss + gather_with_grad: each rank scores its own rows against every
        # rank's columns, and gradients flow through the gathered features.
        return cls(model=model, loss=open_clip.ClipLoss(
            local_loss=world_size > 1, gather_with_grad=world_size > 1, rank=rank, world_size=world_size), **options)

    def _images(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def training_step(self, batch: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        if len(batch) == 4:
            return self._grouped_step(*batch)
        images, tokens = batch  # (B, 3, H, W), (B, ctx)
        # (B, d), (B, d), () and, for models with a logit bias, ()
        image_features, text_features, logit_scale, *bias = self.model(self._images(images), tokens)
        if isinstance(self.loss, SigLipLoss):
            loss = self.loss(image_features, text_features, logit_scale, bias[0])
        else:
            loss = self.loss(image_features, text_features, logit_scale)
        return {"loss": loss, "temperature": 1.0 / logit_scale.detach()}

    def _grouped_step(self, view1: torch.Tensor, view2: torch.Tensor, tokens: torch.Tensor,
                      groups: torch.Tensor) -> dict[str, torch.Tensor]:
        # (B, 3, H, W) x 2, (B, ctx), (B,): one forward over both views (batch norm sees all 2B)
        image, text, logit_scale, ssl = self.model(self._images(torch.cat([view1, view2])), tokens)
        view_groups = torch.cat([groups, groups])  # (2B,)
        clip = multi_positive_clip(image, text, logit_scale, view_groups, groups, self.rank, self.world_size)
        out = {"clip": clip.detach(), "temperature": 1.0 / logit_scale.detach()}
        loss = clip
        if ssl is not None and self.ssl_weight > 0:
            image_loss = supcon(ssl, view_groups, self.ssl_temperature, self.rank, self.world_size)
            loss = loss + self.ssl_weight * image_loss
            out["ssl"] = image_loss.detach()
        out["loss"] = loss
        return out

    @torch.no_grad()
    def after_step(self) -> None:
        model = unwrap(self.model)
        model = getattr(model, "clip", model)
        model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)


def configure(values: dict, augment: dict) -> ClipTrainConfig:
    """The config from the command line's values: ``--augment`` and the augmentation flags make ``augment``."""
    values["augment"] = AugmentConfig(**{**CLIP_AUGMENT, **augment}) if values["augment"] else None
    return ClipTrainConfig(**values)


def _monitor(cfg: ClipTrainConfig):
    """Zero-shot and retrieval metrics on the validation manifest, for the periodic monitor."""
    if cfg.val_data is None:
        return None
    from training.eval_clip import EvalConfig, evaluate_encoder, load_rows

    ecfg = EvalConfig(encoders=[], data=cfg.val_data, image_key=cfg.image_key, caption_key=cfg.caption_key,
                      label_keys=cfg.val_label_keys, group_key=cfg.val_group_key)
    rows, images = load_rows(ecfg)
    return lambda encoder: evaluate_encoder(encoder, rows, images, ecfg)


def prepare(cfg: ClipTrainConfig, dist: DistInfo, device: torch.device) -> Job:
    model, model_cfg, arch = make_model(cfg)
    channels_last = cfg.channels_last if cfg.channels_last is not None else isinstance(model.visual, BackboneTower)
    if channels_last:
        model.visual.to(memory_format=torch.channels_last)
    tokenizer = build_tokenizer(cfg.model, model_cfg)
    preprocess = Preprocess(**preprocess_of(model))
    dim = int(model_cfg["embed_dim"])

    shards = shard_urls(cfg.data) if is_shards(cfg.data) else None
    grouped = cfg.views == 2 and shards is None
    if cfg.views == 2 and shards is not None:
        log.warning("webdataset shards train plain CLIP: the two-view, multi-positive form needs a manifest")
    if grouped or cfg.augment is None:
        transform = preprocess.transform(is_train=True)  # (the grouped form augments whole batches)
    else:
        transform = simclr_transform(preprocess, cfg.augment)
    if shards is not None:
        decode = DecodePair(cfg.image_key, cfg.caption_key, transform, tokenizer)
        dataset = None
        batch_size, described = cfg.batch_size, f"{len(shards)} shards"
    else:
        dataset = ImageTextDataset(cfg.data, cfg.image_key, cfg.caption_key, transform, tokenizer, seed=cfg.seed,
                                   views=2 if grouped else 1,
                                   group_key=cfg.group_key if cfg.multi_positive else ROW,
                                   caption_variant_keys=cfg.caption_variant_keys,
                                   side=2 * _side(preprocess.size), cache_mb=cfg.cache_mb)
        batch_size, described = min(cfg.batch_size, len(dataset) // dist.world_size), f"{len(dataset)} pairs"
    if grouped:
        train_model = ClipTrainingModel(model, cfg.ssl_on if cfg.ssl_weight > 0 else None, cfg.ssl_dim).to(device)
        step = ClipMethod.create(train_model, dist.rank, dist.world_size, "multi-positive",
                                 ssl_weight=cfg.ssl_weight, ssl_temperature=cfg.ssl_temperature,
                                 channels_last=channels_last)
    else:
        model = model.to(device)
        step = ClipMethod.create(model, dist.rank, dist.world_size, cfg.loss, channels_last=channels_last)

    eval_images: list = []
    eval_captions: list[str] = []
    if dist.is_main and shards is not None:
        eval_images, eval_captions = first_pairs(shards, decode, cfg.eval_limit)
    elif dist.is_main:
        n_eval = min(cfg.eval_limit, len(dataset))
        eval_images = [KeyedImages.load_image(dataset, i) for i in range(n_eval)]  # PIL, not the cached pixels
        eval_captions = dataset.captions[:n_eval]

    def loader(start: int):
        if shards is not None:
            # every process (and every resumed start) draws its own shard stream
            stream_seed = cfg.seed * 1_000_003 + dist.rank * 10_007 + start
            return DataLoader(shard_pipeline(shards, decode, batch_size, stream_seed), batch_size=None,
                              num_workers=cfg.workers, pin_memory=device.type == "cuda")
        collate = None
        if grouped:
            augment = BatchAugment(cfg.augment or NO_AUGMENT, _side(preprocess.size), preprocess.mean, preprocess.std)
            collate = GroupedCollate(augment, cfg.seed)
        return keyed_loader(dataset, batch_size, cfg.seed, dist, device, cfg.workers, start, collate)

    def summary(before, after) -> dict:
        return {"pairs": len(dataset) if dataset is not None else None,
                "shards": len(shards) if shards is not None else None,
                "bad_files": len(dataset.bad_files) if dataset is not None else None,
                "text_to_image_recall": {"untrained": before, "trained": after, "images": len(eval_images)}}

    def report(before, after) -> str:
        lines = [f"\ntext->image recall on {len(eval_images)} images (query = caption, hit = that image)",
                 f"{'encoder':<12}{'R@1':>8}{'R@5':>8}{'R@10':>8}"]
        lines += [f"{name:<12}{r[1]:>8.3f}{r[5]:>8.3f}{r[10]:>8.3f}"
                  for name, r in (("untrained", before), ("trained", after)) if r is not None]
        return "\n".join(lines)

    return Job(
        step=step,
        # the one Encoder around the model in training: a ClipTrainingModel holds the CLIP model as .clip
        encoder=lambda trained: clip_encoder(trained.clip if grouped else trained, tokenizer, preprocess, dim, device),
        loader=loader,
        described=f"training {cfg.model} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params) on "
                  f"{described} from {cfg.data}, batch {batch_size} x {dist.world_size} process(es), "
                  f"{cfg.loop.steps} steps, device {device}",
        arch=arch,
        tokenizer={"type": "open_clip", "model_name": cfg.model,
                   "context_length": model_cfg["text_cfg"].get("context_length", 77)},
        result=lambda fp, before, after, history, seconds: ClipTrainResult(fp, before, after or {}, history, seconds),
        monitor=_monitor(cfg) if dist.is_main else None,
        measure=lambda encoder: text_to_image_recall(encoder, eval_images, eval_captions),
        summary=summary,
        report=report,
    )


METHOD = Method("clip", "train a CLIP encoder on image-caption pairs", ClipTrainConfig, prepare, configure,
                loop_defaults=dict(grad_clip=1.0, steps=800, lr=2e-3, weight_decay=0.1, warmup=40))
