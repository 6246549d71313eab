"""SimCLR, MoCo and RotNet end to end on a few sample images: train -> encoder file -> load -> evaluate."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO, SAMPLE, interrupt_at, sample_rows
from training.data import ImageDataset, labelled_folder
from training.encoder import NoTextTower, load_encoder, read_metadata
from training.image_only import training_images
from training.loop import Interrupted, LoopConfig
from training.methods import registered
from training.methods.simclr import build
from training.probe import encode_labels, knn_accuracy, stratified_split
from training.runner import run

TINY = {"name": "small-cnn", "width": 4, "depth": 2}


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    """24 sample emoji in 3 class folders (their category), 8 each, as symlinks."""
    root = tmp_path_factory.mktemp("labelled")
    by_category: dict[str, list[dict]] = {}
    for r in sample_rows():
        by_category.setdefault(r["category"], []).append(r)
    for category in sorted(by_category)[:3]:
        (root / category).mkdir()
        for r in by_category[category][:8]:
            os.symlink(SAMPLE / r["file"], root / category / Path(r["file"]).name)
    return root


def _cfg(method, data, out, steps=2, **kw):
    config = registered()[method].config
    base = dict(data=data, out=out, backbone=TINY, image_size=16, batch_size=8, workers=0,
                loop=LoopConfig(steps=steps, lr=1e-3, warmup_steps=1, log_every=1, progress=False))
    heads = {k: v for k, v in dict(proj_hidden=16, proj_dim=8, queue_size=16).items() if k in _fields(config)}
    return config(**{**base, **heads, **kw})


def _fields(config) -> set[str]:
    import dataclasses

    return {f.name for f in dataclasses.fields(config)}


@pytest.fixture(scope="module")
def trained(labelled, tmp_path_factory):
    """One encoder file per method, trained for 2 steps on the train split with the k-NN monitor on."""
    out = tmp_path_factory.mktemp("ssl")
    results = {}
    for method in ("simclr", "moco", "rotnet"):
        path = out / f"{method}.safetensors"
        results[method] = (path, run(_cfg(method, labelled, path, holdout=0.25, val_folder=labelled,
                                          val_fraction=0.25, knn_k=3)))
    return results


@pytest.mark.parametrize("method", ["simclr", "moco", "rotnet"])
def test_encoder_file_round_trip(trained, labelled, method):
    path, result = trained[method]
    enc = load_encoder(path)
    assert enc.kind == method and enc.dim == 8 and not enc.can_encode_text and enc.fingerprint == result.fingerprint
    with pytest.raises(NoTextTower):
        enc.encode_texts(["dog"])
    meta = read_metadata(path)
    assert meta["arch"] == {"backbone": TINY} and meta["run"]["method"] == method and meta["run"]["images"] == 18
    assert meta["preprocess"]["size"] == 16
    # the heads (projection / rotation / the momentum encoder) are not in the file: only backbone weights
    assert set(load_file(str(path))) == {k for k in _backbone_keys()}
    # the reloaded encoder scores what the in-training backbone scored at the end of the run
    paths, names = labelled_folder(labelled)
    labels, _ = encode_labels(names)
    bank, queries = stratified_split(names, 0.25, 0)
    from PIL import Image

    feats = enc.encode_images([Image.open(p) for p in paths])
    assert feats.shape == (24, 8) and np.allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    assert knn_accuracy(feats[bank], labels[bank], feats[queries], labels[queries], 3) == result.knn_trained


def _backbone_keys():
    from training.backbones import build_backbone

    return build_backbone(TINY).state_dict().keys()


def test_holdout_trains_on_the_train_split_only(labelled):
    paths, names = labelled_folder(labelled)
    train, test = stratified_split(names, 0.25, seed=5)
    used = training_images(_cfg("simclr", labelled, Path("x"), holdout=0.25, split_seed=5))
    assert used == [paths[i] for i in train] and not set(used) & {paths[i] for i in test}
    assert len(training_images(_cfg("simclr", labelled, Path("x")))) == 24  # no holdout: every image


def test_views_are_seeded_by_the_sampler_key(labelled):
    transform = build(_cfg("simclr", labelled, Path("x"))).transform
    paths, _ = labelled_folder(labelled)
    ds = ImageDataset(paths, transform, seed=0)
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    a1, a2 = ds[3]
    assert torch.equal(torch.get_rng_state(), before)  # loading leaves the caller's RNG where it was
    torch.manual_seed(99)  # ... and does not depend on it
    b1, b2 = ds[3]
    assert a1.shape == (3, 16, 16) and torch.equal(a1, b1) and torch.equal(a2, b2)  # same key: same views
    assert not torch.equal(a1, a2)  # the two views of one key differ
    c1, _ = ds[3 + len(ds)]  # the same image in the next epoch: new views
    assert not torch.equal(a1, c1)
    assert not torch.equal(ImageDataset(paths, transform, seed=1)[3][0], a1)


def test_an_untrained_run_writes_the_random_initialisation(labelled, tmp_path):
    torch.manual_seed(123)
    a = run(_cfg("simclr", labelled, tmp_path / "a.safetensors", steps=0))
    b = run(_cfg("simclr", labelled, tmp_path / "b.safetensors", steps=0))
    c = run(_cfg("simclr", labelled, tmp_path / "c.safetensors", steps=0, seed=1))
    assert a.fingerprint == b.fingerprint != c.fingerprint  # seeded: the same baseline every time


def test_moco_interrupted_and_resumed_matches_an_uninterrupted_run(labelled, tmp_path, monkeypatch):
    """The queue, its pointer and the key encoder are in the checkpoint, so the resumed losses are identical."""
    cfg = lambda out, **kw: _cfg("moco", labelled, out, steps=6, queue_size=12, **kw)  # noqa: E731
    whole = run(cfg(tmp_path / "whole.safetensors"))
    interrupt_at(monkeypatch, 3)
    ckpt = tmp_path / "run.ckpt"
    with pytest.raises(Interrupted, match="step 3"):
        run(cfg(tmp_path / "resumed.safetensors", checkpoint=ckpt))
    monkeypatch.undo()
    torch.manual_seed(999)
    resumed = run(cfg(tmp_path / "resumed.safetensors", checkpoint=ckpt, resume=ckpt))
    assert [r["step"] for r in resumed.history] == list(range(1, 7))
    for a, b in zip(whole.history, resumed.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
    assert resumed.fingerprint == whole.fingerprint


def test_eval_cli_compares_ssl_encoders_with_the_pixel_baseline(trained, labelled, tmp_path, capsys):
    from training.__main__ import main

    out, png = tmp_path / "eval.json", tmp_path / "eval.png"
    files = [str(trained[m][0]) for m in ("simclr", "moco", "rotnet")]
    argv = ["eval", *[a for f in files for a in ("--encoder", f)], "--folder", str(labelled), "--test-fraction",
            "0.25", "--knn-k", "3", "--knn-k", "5", "--linear-iters", "50", "--json", str(out), "--plot", str(png)]
    try:
        import matplotlib  # noqa: F401
        has_matplotlib = True
    except ImportError:
        has_matplotlib = False
    code = main(argv)
    captured = capsys.readouterr()
    if not has_matplotlib:
        assert code == 2 and "--plot needs matplotlib" in captured.err
        argv = argv[:-2]
        assert main(argv) == 0
        captured = capsys.readouterr()
    else:
        assert code == 0 and png.read_bytes()[:4] == b"\x89PNG"
    header = captured.out.splitlines()[0].split()
    assert header == ["metric", "simclr.safetensors", "moco.safetensors", "rotnet.safetensors", "pixels"]
    payload = json.loads(out.read_text())
    results = payload["results"]
    assert list(results) == [*files, "pixels"]
    metrics = {"k-NN top1 (k=3, 3 classes)", "k-NN top1 (k=5, 3 classes)", "linear probe top1 (3 classes)"}
    assert all(set(r) == metrics for r in results.values())
    # 6 test images (2 per class): every accuracy is a multiple of 1/6
    assert all(abs(v * 6 - round(v * 6)) < 1e-9 for r in results.values() for v in r.values())
    assert payload["split"] == {"test_fraction": 0.25, "seed": 0}


def test_ssl_cli_trains_and_reports_bad_input(labelled, tmp_path, capsys):
    from training.__main__ import main

    out = tmp_path / "r.safetensors"
    assert main(["rotnet", "--data", str(labelled), "--out", str(out), "--backbone", "small-cnn,width=4,depth=1",
                 "--image-size", "16", "--batch-size", "8", "--steps", "1", "--workers", "0", "--no-progress"]) == 0
    assert load_encoder(out).kind == "rotnet" and read_metadata(out)["arch"]["backbone"]["width"] == 4
    assert main(["simclr", "--data", str(tmp_path / "missing"), "--out", str(out), "--workers", "0"]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["moco", "--data", str(labelled), "--out", str(out), "--backbone", "vgg11", "--workers", "0"]) == 2
    assert "unknown backbone" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "training" / "recipes").glob("*.json")
                                        if "simclr" in p.name or "moco" in p.name or "rotnet" in p.name))
def test_shipped_ssl_recipes_name_only_real_options(name):
    import argparse

    from training.__main__ import _method_parser

    command = next(m for m in ("simclr", "moco", "rotnet") if m in name)
    sub = argparse.ArgumentParser().add_subparsers()
    _method_parser(sub, registered()[command])
    dests = {a.dest for a in sub.choices[command]._actions}
    values = json.loads((REPO / "training" / "recipes" / name).read_text())
    assert {k for k in values if not k.startswith("_")} <= dests


def test_the_command_line_default_keeps_layout_and_handedness(tmp_path):
    """``python -m training simclr --data F --out E`` with no other option: a 2x2 grid of features (512 wide),
    no flips for small images and 1,000 steps (the defaults bench/README.md measured against raw pixels)."""
    import argparse

    from training.__main__ import _method_parser, config_from_args

    method = registered()["simclr"]
    sub = argparse.ArgumentParser().add_subparsers(dest="command")
    _method_parser(sub, method)
    args = sub.choices["simclr"].parse_args(["--data", str(tmp_path), "--out", str(tmp_path / "e.safetensors")])
    cfg = config_from_args(method, args)
    assert cfg.backbone == {"name": "small-cnn", "grid": 2}
    assert cfg.augmentation.flip_prob == 0.0 and cfg.image_size == 32
    assert build(cfg).model.backbone.out_dim == 512
    assert cfg.loop.steps == 1000
    moco = registered()["moco"]  # the other image-only methods keep the shared loop defaults
    assert moco.loop_defaults["steps"] == 500
