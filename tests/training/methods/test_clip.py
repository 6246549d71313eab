import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tests.conftest import REPO
from training.clip_model import build_model, model_config
from training.encoder import load_encoder, read_metadata
from training.methods.clip import ClipMethod


def naive_clip_loss(image_features, text_features, logit_scale):
    """CLIP's symmetric InfoNCE written out: mean of image->text and text->image cross-entropy."""
    logits = logit_scale * image_features @ text_features.T  # (B, B)
    labels = torch.arange(len(logits))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


@pytest.mark.parametrize("batch", [1, 4, 17])
def test_training_step_loss_matches_the_naive_reference(batch):
    torch.manual_seed(batch)
    model = build_model(model_config("lookalike-micro"))
    method = ClipMethod.create(model)
    images = torch.randn(batch, 3, 32, 32)
    tokens = torch.randint(1, 1000, (batch, 16))
    losses = method.training_step([images, tokens])
    with torch.no_grad():
        img, txt, scale = model(images, tokens)[:3]
    assert losses["loss"].item() == pytest.approx(naive_clip_loss(img, txt, scale).item(), rel=1e-5)


def naive_siglip_loss(image_features, text_features, logit_scale, logit_bias):
    """SigLIP written out: every (image, text) pair is a binary decision, +1 on the diagonal, -1 elsewhere;
    the sum of -log sigmoid(label * logit) over the B x B pairs, divided by B."""
    logits = logit_scale * image_features @ text_features.T + logit_bias  # (B, B)
    labels = 2 * torch.eye(len(logits)) - 1
    return -F.logsigmoid(labels * logits).sum() / len(logits)


@pytest.mark.parametrize("batch", [1, 5])
def test_siglip_step_matches_the_naive_reference(batch):
    torch.manual_seed(batch)
    cfg = model_config("lookalike-micro")
    cfg.update(init_logit_bias=-10.0)
    model = build_model(cfg)
    method = ClipMethod.create(model, loss="siglip")
    images, tokens = torch.randn(batch, 3, 32, 32), torch.randint(1, 1000, (batch, 16))
    losses = method.training_step([images, tokens])
    with torch.no_grad():
        img, txt, scale, bias = model(images, tokens)
    assert losses["loss"].item() == pytest.approx(naive_siglip_loss(img, txt, scale, bias).item(), rel=1e-5)


def test_siglip_needs_a_logit_bias():
    with pytest.raises(ValueError, match="logit bias"):
        ClipMethod.create(build_model(model_config("lookalike-micro")), loss="siglip")


def test_temperature_is_clamped_at_100():
    model = build_model(model_config("lookalike-micro"))
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    ClipMethod.create(model).after_step()
    assert model.logit_scale.exp().item() == pytest.approx(100.0, rel=1e-5)


def test_training_learns_the_sample(small_manifest, tmp_path):
    """60 steps on 96 pairs: text->image recall@5 must rise well above the untrained encoder's."""
    from training.loop import LoopConfig
    from training.methods.clip import ClipTrainConfig
    from training.runner import run

    result = run(ClipTrainConfig(
        data=small_manifest, out=tmp_path / "e.safetensors", image_key="file", caption_key="name",
        model="lookalike-micro", batch_size=48, workers=0,
        loop=LoopConfig(steps=60, lr=2e-3, warmup_steps=5, progress=False),
    ))
    first, last = result.history[0]["loss"], result.history[-1]["loss"]
    assert last < first - 0.5
    assert result.recall_trained[5] >= result.recall_untrained[5] + 0.15
    assert load_encoder(tmp_path / "e.safetensors").fingerprint == result.fingerprint


def test_siglip_training_learns_and_loads(small_manifest, tmp_path):
    """--loss siglip: the run adds a logit bias to the model, learns, and the file loads with it."""
    from training.loop import LoopConfig
    from training.methods.clip import ClipTrainConfig
    from training.runner import run

    result = run(ClipTrainConfig(
        data=small_manifest, out=tmp_path / "s.safetensors", image_key="file", caption_key="name",
        model="lookalike-micro", loss="siglip", batch_size=48, workers=0,
        loop=LoopConfig(steps=60, lr=2e-3, warmup_steps=5, progress=False),
    ))
    assert result.history[-1]["loss"] < result.history[0]["loss"] - 0.5
    assert result.recall_trained[5] >= result.recall_untrained[5] + 0.15
    encoder = load_encoder(tmp_path / "s.safetensors")
    assert encoder.fingerprint == result.fingerprint
    assert read_metadata(tmp_path / "s.safetensors")["arch"]["model_cfg"]["init_logit_bias"] == -10.0


def test_cli_writes_a_loadable_encoder(small_manifest, tmp_path):
    out = tmp_path / "cli.safetensors"
    proc = subprocess.run(
        [sys.executable, "-m", "training", "clip", "--data", str(small_manifest), "--image-key", "file",
         "--caption-key", "name", "--out", str(out), "--model", "lookalike-micro", "--steps", "3",
         "--batch-size", "16", "--workers", "0", "--no-progress"],
        cwd=REPO, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "text->image recall" in proc.stdout and "untrained" in proc.stdout
    meta = read_metadata(out)
    assert meta["kind"] == "clip" and meta["arch"]["model_name"] == "lookalike-micro"
    assert meta["run"]["config"]["loop"]["steps"] == 3


def test_cli_reports_a_bad_manifest_without_a_traceback(tmp_path):
    bad = tmp_path / "m.jsonl"
    bad.write_text('{"file": "a.png"}\n')
    proc = subprocess.run(
        [sys.executable, "-m", "training", "clip", "--data", str(bad), "--caption-key", "name",
         "--out", str(tmp_path / "x.safetensors"), "--workers", "0"],
        cwd=REPO, capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert "row 1 lacks name" in proc.stderr and "Traceback" not in proc.stderr


def test_recipes_set_defaults_and_flags_override(small_manifest, tmp_path):
    recipe = tmp_path / "r.json"
    recipe.write_text('{"_about": "test", "model": "lookalike-micro", "steps": 2, "batch_size": 8, "workers": 0}')
    out = tmp_path / "r.safetensors"
    proc = subprocess.run(
        [sys.executable, "-m", "training", "clip", "--recipe", str(recipe), "--data", str(small_manifest),
         "--caption-key", "name", "--out", str(out), "--steps", "1", "--no-progress"],
        cwd=REPO, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    cfg = read_metadata(out)["run"]["config"]
    assert (cfg["model"], cfg["batch_size"], cfg["loop"]["steps"]) == ("lookalike-micro", 8, 1)


@pytest.mark.parametrize("name", ["emoji-cpu.json", "vit-b-32-gpu.json"])
def test_shipped_recipes_name_only_real_options(name):
    import argparse
    import json

    from training.__main__ import _method_parser
    from training.methods import registered

    sub = argparse.ArgumentParser().add_subparsers()
    _method_parser(sub, registered()["clip"])
    dests = {a.dest for a in sub.choices["clip"]._actions}
    values = json.loads((REPO / "training" / "recipes" / name).read_text())
    assert {k for k in values if not k.startswith("_")} <= dests


@pytest.mark.parametrize("locked", [True, False])
def test_a_simclr_encoder_as_the_image_tower(small_manifest, tmp_path, locked):
    """--image-tower: a SimCLR file's backbone (weights and preprocessing) becomes CLIP's image side;
    locked (LiT) it ends the run unchanged, unlocked it trains; either way the result is a CLIP encoder."""
    from safetensors.torch import load_file

    from training.loop import LoopConfig
    from training.methods.clip import ClipTrainConfig
    from training.methods.simclr import SimCLRConfig
    from training.runner import run

    simclr = tmp_path / "simclr.safetensors"
    run(SimCLRConfig(data=small_manifest, out=simclr, image_size=32, batch_size=32,
                     backbone={"name": "small-cnn", "width": 8, "depth": 2}, workers=0,
                     loop=LoopConfig(steps=3, progress=False)))
    source = load_encoder(simclr)
    out = tmp_path / "lit.safetensors"
    result = run(ClipTrainConfig(
        data=small_manifest, out=out, image_key="file", caption_key="name", model="lookalike-micro",
        image_tower=simclr, lock_image=locked, batch_size=48, workers=0,
        loop=LoopConfig(steps=40, lr=2e-3, warmup_steps=5, progress=False),
    ))
    assert result.history[-1]["loss"] < result.history[0]["loss"] - 0.3

    lit = load_encoder(out)
    assert lit.kind == "clip" and lit.can_encode_text and lit.dim == 32
    assert lit.preprocess == source.preprocess  # the backbone sees images as it did in SimCLR training
    tower = read_metadata(out)["arch"]["image_tower"]
    assert tower["from_fingerprint"] == source.fingerprint and tower["locked"] is locked
    state = load_file(str(out))
    unchanged = all(torch.equal(state[f"visual.backbone.{k}"], v) for k, v in source.image_tower.state_dict().items())
    assert unchanged is locked
    images = [Image.open(REPO / "samples" / "emoji" / "google" / "1f436.png")]
    assert lit.encode_images(images).shape == (1, 32) and lit.encode_texts(["dog face"]).shape == (1, 32)


def test_image_tower_must_be_image_only(tmp_path, micro_encoder, small_manifest):
    from training.methods.clip import ClipTrainConfig
    from training.runner import run

    with pytest.raises(ValueError, match="image-only encoder"):
        run(ClipTrainConfig(data=small_manifest, out=tmp_path / "x.safetensors", image_key="file",
                            caption_key="name", model="lookalike-micro", image_tower=micro_encoder, workers=0))


@pytest.mark.parametrize("ssl_on", ["embedding", "backbone"])
def test_the_supcon_term_looks_at_the_embedding_or_through_a_head(small_manifest, tmp_path, ssl_on):
    """--ssl-on backbone (the default): a projection head's outputs, which train and stay out of the encoder
    file; --ssl-on embedding: the SupCon vectors are the image embeddings retrieval searches."""
    from training.methods.clip import ClipTrainConfig, ClipTrainingModel, make_model

    out = tmp_path / "o.safetensors"
    proc = subprocess.run(
        [sys.executable, "-m", "training", "clip", "--data", str(small_manifest), "--image-key", "file",
         "--caption-key", "name", "--out", str(out), "--steps", "3", "--batch-size", "16", "--workers", "0",
         "--ssl-on", ssl_on, "--ssl-dim", "8", "--no-progress"],
        cwd=REPO, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert read_metadata(out)["run"]["config"]["ssl_on"] == ssl_on
    assert not any("ssl_head" in k for k in load_file_keys(out))

    clip, _, _ = make_model(ClipTrainConfig(data=small_manifest, out=out))
    model = ClipTrainingModel(clip, ssl_on, ssl_dim=8).eval()
    context = clip.positional_embedding.shape[0]
    images, tokens = torch.rand(4, 3, 32, 32), torch.randint(1, 100, (4, context))
    image, _, _, ssl = model(images, tokens)
    if ssl_on == "embedding":
        assert model.ssl_head is None and ssl is image
    else:
        assert ssl.shape == (4, 8) and model.ssl_head is not None


def test_the_default_recipe_learns_cross_vendor_matches_and_loads(small_manifest, tmp_path):
    """The default (lookalike-cnn, two views, multi-positive CLIP + SupCon, batched style augmentation):
    text->image and cross-vendor image->image recall rise above the untrained encoder's, and
    the file loads as a CLIP encoder whose image tower is the CNN, giving the vectors training had."""
    from training.eval_clip import EvalConfig
    from training.eval_clip import run as evaluate
    from training.loop import LoopConfig
    from training.methods.clip import ClipTrainConfig
    from training.runner import run

    def cfg(out, steps):
        return ClipTrainConfig(data=small_manifest, out=out, image_key="file", caption_key="name", batch_size=48,
                               workers=0, loop=LoopConfig(steps=steps, lr=2e-3, warmup_steps=5, progress=False))

    untrained, trained = tmp_path / "u.safetensors", tmp_path / "t.safetensors"
    run(cfg(untrained, 0))
    result = run(cfg(trained, 60))
    assert {"clip", "ssl", "loss"} <= set(result.history[-1])
    assert result.history[-1]["loss"] < result.history[0]["loss"] - 1.0
    scores = evaluate(EvalConfig(encoders=[str(untrained), str(trained)], data=small_manifest, caption_key="name",
                                 group_key="code", ks=(1, 5)))
    before, after = scores[str(untrained)], scores[str(trained)]
    # a random CNN's features already match drawings about as well as pixels do, so the image side
    # moves less in 60 steps
    assert after["text->image R@5"] >= before["text->image R@5"] + 0.5
    assert after["image->image R@5 (code)"] >= before["image->image R@5 (code)"] + 0.08

    meta = read_metadata(trained)
    assert meta["arch"]["model_name"] == "lookalike-cnn"
    assert meta["arch"]["model_cfg"]["image_backbone"]["name"] == "small-cnn"
    assert meta["arch"]["model_cfg"]["image_backbone"]["grid"] == 4  # the layout-keeping pooling is the default's
    assert not any("ssl_head" in k for k in load_file_keys(trained))  # the SSL head stays out of the file
    encoder = load_encoder(trained)
    assert type(encoder.model.visual).__name__ == "BackboneTower" and encoder.preprocess.size == 32
    images = [Image.open(REPO / "samples" / "emoji" / "google" / "1f436.png")]
    assert encoder.encode_images(images).shape == (1, 128)


def load_file_keys(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return list(f.keys())


def test_cli_options_of_the_data_efficient_form(small_manifest, tmp_path):
    """The ablation switches reach the run: views, positives, the SSL term, augmentation, the backbone."""
    out = tmp_path / "o.safetensors"
    proc = subprocess.run(
        [sys.executable, "-m", "training", "clip", "--data", str(small_manifest), "--image-key", "file",
         "--caption-key", "name", "--out", str(out), "--steps", "2", "--batch-size", "16", "--workers", "0",
         "--no-multi-positive", "--ssl-weight", "0", "--no-augment", "--image-backbone", "small-cnn,width=8,depth=2",
         "--group-key", "code", "--caption-variant-key", "short_names", "--no-progress"],
        cwd=REPO, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    cfg = read_metadata(out)["run"]["config"]
    assert (cfg["multi_positive"], cfg["ssl_weight"], cfg["augment"], cfg["views"]) == (False, 0.0, None, 2)
    assert cfg["image_backbone"] == {"name": "small-cnn", "width": 8, "depth": 2}
    assert cfg["caption_variant_keys"] == ["short_names"] and cfg["group_key"] == "code"
    assert load_encoder(out).model.visual.backbone.out_dim == 16
