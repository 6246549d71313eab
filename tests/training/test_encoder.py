import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import REPO, SAMPLE, sample_rows
from training.clip_model import build_model, model_config, preprocess_of
from training.encoder import Encoder, EncoderError, NoTextTower, Preprocess, load_encoder, read_metadata, save_encoder


def _images(n=3):
    return [Image.open(SAMPLE / r["file"]) for r in sample_rows()[:n]]


def _save_random_micro(path, seed=0):
    torch.manual_seed(seed)
    cfg = model_config("lookalike-micro")
    model = build_model(cfg)
    return save_encoder(
        path, kind="clip", arch={"model_name": "lookalike-micro", "model_cfg": cfg}, state_dict=model.state_dict(),
        preprocess=Preprocess(**preprocess_of(model)), dim=cfg["embed_dim"], run={"note": "test"},
    ), model


def test_trained_encoder_embeds_images_and_texts(micro_encoder):
    enc = load_encoder(micro_encoder)
    assert enc.kind == "clip" and enc.can_encode_text and enc.dim == 32
    img = enc.encode_images(_images(3))
    txt = enc.encode_texts(["dog face", "red apple"])
    assert img.dtype == np.float32 and img.shape == (3, 32)
    assert txt.dtype == np.float32 and txt.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1.0, rtol=1e-5)
    assert enc.encode_images([]).shape == (0, 32)
    meta = read_metadata(micro_encoder)
    assert meta["fingerprint"] == enc.fingerprint
    assert meta["run"]["method"] == "clip" and "text_to_image_recall" in meta["run"]


def test_batched_encoding_equals_one_by_one(micro_encoder):
    enc = load_encoder(micro_encoder)
    images = _images(5)
    enc.batch_size = 2
    together = enc.encode_images(images)
    alone = np.concatenate([enc.encode_images([im]) for im in images])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_fingerprint_is_stable_and_depends_on_weights(tmp_path):
    fp_a, _ = _save_random_micro(tmp_path / "a.safetensors", seed=0)
    fp_b, _ = _save_random_micro(tmp_path / "b.safetensors", seed=0)
    fp_c, _ = _save_random_micro(tmp_path / "c.safetensors", seed=1)
    assert fp_a == fp_b != fp_c
    assert load_encoder(tmp_path / "a.safetensors").fingerprint == fp_a


def test_round_trip_gives_the_same_vectors_as_the_model(tmp_path):
    _, model = _save_random_micro(tmp_path / "a.safetensors")
    enc = load_encoder(tmp_path / "a.safetensors")
    tokens = enc.tokenizer(["dog face"])
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model.eval().encode_text(tokens), dim=-1).numpy()
    np.testing.assert_allclose(enc.encode_texts(["dog face"]), expected, atol=1e-6)


def test_tampered_weights_are_refused(tmp_path):
    path = tmp_path / "a.safetensors"
    _save_random_micro(path)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # flip bits inside the last tensor
    path.write_bytes(bytes(data))
    with pytest.raises(EncoderError, match="fingerprint"):
        load_encoder(path)


@pytest.mark.parametrize("content", [b"", b"not an encoder at all", b"\x00" * 64])
def test_garbage_files_are_refused_clearly(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(EncoderError, match="not a lookalike encoder"):
        load_encoder(path)


def test_missing_file(tmp_path):
    with pytest.raises(EncoderError, match="not found"):
        load_encoder(tmp_path / "nope.safetensors")


def test_image_only_encoder_refuses_text(micro_encoder):
    clip = load_encoder(micro_encoder)
    image_only = Encoder(kind="simclr", dim=clip.dim, fingerprint="x", preprocess=clip.preprocess,
                         image_tower=clip.model.encode_image)
    assert not image_only.can_encode_text
    assert image_only.encode_images(_images(1)).shape == (1, clip.dim)
    with pytest.raises(NoTextTower, match="no text tower"):
        image_only.encode_texts(["dog"])


def test_local_open_clip_checkpoint_loads_offline(tmp_path):
    """``open_clip:MODEL/PATH`` goes through open_clip.create_model with a local file: no network."""
    torch.manual_seed(0)
    model = build_model(model_config("lookalike-micro"))
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    enc = load_encoder(f"open_clip:lookalike-micro/{ckpt}")
    assert enc.dim == 32 and enc.can_encode_text
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model.eval().encode_text(enc.tokenizer(["cat"])), dim=-1).numpy()
    np.testing.assert_allclose(enc.encode_texts(["cat"]), expected, atol=1e-6)


def test_zero_shot_weights_are_normalised(micro_encoder):
    enc = load_encoder(micro_encoder)
    w = enc.zero_shot_weights(["dog", "cat", "car"], ["a photo of a {}.", "{}"])
    assert w.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(w, axis=1), 1.0, rtol=1e-5)


def test_load_encoder_in_a_separate_process(micro_encoder):
    code = textwrap.dedent(f"""
        import json, sys
        from PIL import Image
        from training.encoder import load_encoder
        enc = load_encoder({str(micro_encoder)!r})
        v = enc.encode_images([Image.open({str(SAMPLE / sample_rows()[0]['file'])!r})])
        t = enc.encode_texts(["dog face"])
        print(json.dumps({{"fp": enc.fingerprint, "img": v.shape, "txt": t.shape}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"fp": load_encoder(micro_encoder).fingerprint, "img": [1, 32], "txt": [1, 32]}


@pytest.mark.parametrize("resize_mode", ["shortest", "squash"])
def test_preprocessing_split_in_two_halves_is_bit_for_bit_the_same(resize_mode):
    import io

    emoji = [Image.open(SAMPLE / r["file"]) for r in sample_rows()[:4]]  # RGBA artwork
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG")
    palette = photo.convert("P")
    images = [*emoji, Image.open(io.BytesIO(buffer.getvalue())), palette, photo.convert("L")]
    pre = Preprocess(size=48, mean=[0.48, 0.45, 0.40], std=[0.26, 0.26, 0.27], resize_mode=resize_mode)
    whole = pre.transform()
    per_image, per_batch = pre.split()
    pixels = torch.stack([per_image(im) for im in images])
    assert pixels.dtype == torch.uint8 and pixels.shape == (len(images), 3, 48, 48)
    assert torch.equal(per_batch(pixels), torch.stack([whole(im) for im in images]))


def test_encoder_vectors_from_pixels_equal_those_from_tensors(micro_encoder):
    encoder, images = load_encoder(micro_encoder), _images(4)
    from_pixels = encoder.tensors_from_pixels(torch.stack([encoder.image_pixels(im) for im in images]))
    assert from_pixels.dtype == torch.float32
    np.testing.assert_array_equal(encoder.encode_tensors(from_pixels), encoder.encode_images(images))
