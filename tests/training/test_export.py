"""``python -m training export``: each export, loaded by the other library, gives ``load_encoder``'s vectors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import open_clip
import pytest
import torch
from PIL import Image

from tests.conftest import SAMPLE, sample_rows
from training.__main__ import main
from training.encoder import Preprocess, load_encoder, save_encoder
from training.export import export
from training.images import to_rgb

TEXTS = ["dog face", "red heart", "keycap 7", "a flag of a country", "x"]


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    """Five sample emoji as RGB, flattened onto white the way lookalike decodes them."""
    return [to_rgb(Image.open(SAMPLE / r["file"])) for r in sample_rows()[::150][:5]]


@pytest.fixture(scope="module")
def ssl_encoder(tmp_path_factory) -> Path:
    """An image-only (SimCLR) encoder file: a small CNN with batch norm, untrained."""
    from training.backbones import build_backbone

    spec = {"name": "small-cnn", "width": 4, "depth": 2}
    torch.manual_seed(0)
    backbone = build_backbone(spec)
    path = tmp_path_factory.mktemp("ssl") / "simclr.safetensors"
    save_encoder(path, kind="simclr", arch={"backbone": spec}, state_dict=backbone.state_dict(),
                 preprocess=Preprocess(size=16, mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3]), dim=backbone.out_dim)
    return path


def preprocess_from_json(image: Image.Image, p: dict) -> np.ndarray:
    """What preprocess.json says, done with PIL and numpy alone: (3, H, W) float32."""
    size = p["size"]
    interpolation = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}[p["interpolation"]]
    assert p["resize_mode"] == "shortest"
    w, h = image.size
    scale = size / min(w, h)
    image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), interpolation)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    x = np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.float32) * np.float32(p["scale"])
    x = (x - np.asarray(p["mean"], dtype=np.float32)) / np.asarray(p["std"], dtype=np.float32)
    return x.transpose(2, 0, 1)


def test_open_clip_export_loads_in_open_clip(micro_encoder, tmp_path, images):
    done = export(micro_encoder, "open_clip", tmp_path)
    ours = load_encoder(micro_encoder)
    open_clip.add_model_config(tmp_path)  # registers the exported config under its model name
    for name, pretrained in ((done.model_name, str(tmp_path / "open_clip_model.safetensors")),
                             (f"local-dir:{tmp_path}", None)):
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained)
        model.eval()
        tokenizer = open_clip.get_tokenizer(name)
        with torch.no_grad():
            image_vectors = model.encode_image(torch.stack([preprocess(im) for im in images]), normalize=True)
            text_vectors = model.encode_text(tokenizer(TEXTS), normalize=True)
        np.testing.assert_allclose(image_vectors.numpy(), ours.encode_images(images), atol=1e-5)
        np.testing.assert_allclose(text_vectors.numpy(), ours.encode_texts(TEXTS), atol=1e-5)


def test_onnx_export_runs_in_onnxruntime(micro_encoder, tmp_path, images):
    export(micro_encoder, "onnx", tmp_path)
    ours = load_encoder(micro_encoder)
    described = json.loads((tmp_path / "preprocess.json").read_text())
    assert described["kind"] == "clip" and described["dim"] == ours.dim and described["normalised"] is True
    image = described["image"]
    session = ort.InferenceSession(str(tmp_path / image["file"]))
    pixels = np.stack([preprocess_from_json(im, image["preprocess"]) for im in images])  # batch 5: not the export's 2
    (vectors,) = session.run([image["output"]], {image["input"]: pixels})
    np.testing.assert_allclose(vectors, ours.encode_images(images), atol=1e-4)

    text = described["text"]
    tok = text["tokenizer"]
    assert tok["type"] == "clip_bpe"
    tokenizer = open_clip.SimpleTokenizer(bpe_path=str(tmp_path / tok["vocab"]), context_length=tok["context_length"])
    ids = tokenizer(TEXTS).numpy()
    assert (ids[:, 0] == tok["start_token"]).all()
    session = ort.InferenceSession(str(tmp_path / text["file"]))
    (vectors,) = session.run([text["output"]], {text["input"]: ids})
    np.testing.assert_allclose(vectors, ours.encode_texts(TEXTS), atol=1e-4)


def test_image_only_encoders_export_as_onnx_image_graphs(ssl_encoder, tmp_path, images):
    export(ssl_encoder, "onnx", tmp_path)
    described = json.loads((tmp_path / "preprocess.json").read_text())
    assert described["kind"] == "simclr" and "text" not in described and not (tmp_path / "text.onnx").exists()
    assert described["image"]["preprocess"]["mean"] == [0.5, 0.4, 0.3]
    session = ort.InferenceSession(str(tmp_path / "image.onnx"))
    pixels = np.stack([preprocess_from_json(im, described["image"]["preprocess"]) for im in images])
    (vectors,) = session.run(["image_embeds"], {"pixels": pixels})
    np.testing.assert_allclose(vectors, load_encoder(ssl_encoder).encode_images(images), atol=1e-4)


def test_the_command_and_its_errors(ssl_encoder, micro_encoder, tmp_path, capsys):
    assert main(["export", str(micro_encoder), "--format", "open_clip", "--out", str(tmp_path / "oc")]) == 0
    assert "create_model_and_transforms('lookalike-micro'" in capsys.readouterr().out
    assert main(["export", str(ssl_encoder), "--format", "open_clip", "--out", str(tmp_path / "x")]) == 2
    assert "export it with --format onnx" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing.safetensors"), "--format", "onnx", "--out", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err
