"""ImageTextDataset's two-view form: groups, partners, caption variants, the in-memory cache, collation."""

import json

import torch
from PIL import Image

from tests.conftest import SAMPLE, sample_rows, write_manifest
from training.augment import AugmentConfig
from training.batch_augment import BatchAugment
from training.data import ROW, GroupedCollate, ImageTextDataset

NONE = AugmentConfig(min_scale=1.0, flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)


def _tokens(texts):
    """A stand-in tokenizer that keeps the text readable: its bytes, zero-padded to 32."""
    return torch.tensor([list(t.encode()[:32].ljust(32, b"\0")) for t in texts])


def _text(tokens):
    return bytes(tokens.tolist()).rstrip(b"\0").decode()


def _manifest(tmp_path, n_codes=6, extra=None):
    rows = sample_rows()
    codes = sorted({r["code"] for r in rows})[:n_codes]
    picked = [{**r, **(extra or {})} for r in rows if r["code"] in codes]
    return write_manifest(tmp_path / "m.jsonl", picked), picked


def test_partners_are_the_other_member_of_the_group(tmp_path):
    manifest, rows = _manifest(tmp_path)
    ds = ImageTextDataset(manifest, "file", "name", None, _tokens, views=2, group_key="code", side=16)
    assert ds.pixels is not None and all(p.shape == (3, 16, 16) and p.dtype == torch.uint8 for p in ds.pixels)
    for key in range(len(ds)):
        first, second, tokens, group, k = ds[key]
        j = key % len(ds)
        partner = next(i for i, r in enumerate(rows) if r["code"] == rows[j]["code"] and i != j)
        assert torch.equal(first, ds.pixels[j]) and torch.equal(second, ds.pixels[partner])
        assert _text(tokens) == rows[j]["name"] and int(group) == int(ds.groups[partner]) and int(k) == key
    assert len(set(ds.groups.tolist())) == 6


def test_without_groups_each_row_pairs_with_itself(tmp_path):
    manifest, _ = _manifest(tmp_path)
    ds = ImageTextDataset(manifest, "file", "name", None, _tokens, views=2, group_key=ROW, side=16)
    first, second, *_ = ds[3]
    assert torch.equal(first, second) and len(set(ds.groups.tolist())) == len(ds)


def test_cached_pixels_are_flattened_onto_white_and_resized(tmp_path):
    manifest, rows = _manifest(tmp_path, n_codes=1)
    ds = ImageTextDataset(manifest, "file", "name", None, _tokens, views=2, side=32)
    with Image.open(SAMPLE / rows[0]["file"]) as im:
        alpha = im.convert("RGBA").resize((32, 32)).getchannel("A")
    corner = ds.pixels[0][:, 0, 0]
    assert alpha.getpixel((0, 0)) == 0 and corner.tolist() == [255, 255, 255]
    # too large for the cache: the same pixels, decoded per item
    lazy = ImageTextDataset(manifest, "file", "name", None, _tokens, views=2, side=32, cache_mb=0.001)
    assert lazy.pixels is None and torch.equal(lazy[0][0], ds.pixels[0])


def test_caption_variants_are_drawn_per_key_and_reproducibly(tmp_path):
    manifest, _ = _manifest(tmp_path, n_codes=2, extra={"short_names": ["alias one", "alias two"]})
    ds = ImageTextDataset(manifest, "file", "name", None, _tokens, views=2, caption_variant_keys=["short_names"],
                          side=16)
    seen = {_text(ds[key][2]) for key in range(0, 200, len(ds))}
    assert seen == {ds.captions[0], "alias one", "alias two"}
    assert _text(ds[8][2]) == _text(ds[8][2])


def test_an_unreadable_image_is_skipped_and_counted(tmp_path):
    manifest, rows = _manifest(tmp_path, n_codes=2)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    lines = manifest.read_text().splitlines()
    lines[0] = json.dumps({**json.loads(lines[0]), "file": str(bad)})
    manifest.write_text("\n".join(lines) + "\n")
    ds = ImageTextDataset(manifest, "file", "name", None, _tokens, views=2, group_key="code", side=16)
    first, second, *_ = ds[0]  # row 0 is unreadable: row 1 stands in
    assert bad in ds.bad_files and torch.equal(first, ds.pixels[1])


def test_collate_augments_whole_batches_reproducibly(tmp_path):
    manifest, _ = _manifest(tmp_path)
    ds = ImageTextDataset(manifest, "file", "name", None, _tokens, views=2, group_key="code", side=16)
    collate = GroupedCollate(BatchAugment(NONE, 8, [0.0] * 3, [1.0] * 3))
    v1, v2, tokens, groups = collate([ds[k] for k in range(4)])
    assert v1.shape == v2.shape == (4, 3, 8, 8) and tokens.shape == (4, 32) and groups.shape == (4,)
    expected = torch.nn.functional.avg_pool2d(torch.stack([ds.pixels[k] for k in range(4)]).float() / 255, 2)
    torch.testing.assert_close(v1, expected, atol=1e-5, rtol=0)
    jitter = GroupedCollate(BatchAugment(AugmentConfig(min_scale=0.3, blur_prob=0.0), 8, [0.0] * 3, [1.0] * 3))
    a, b = jitter([ds[k] for k in range(4)]), jitter([ds[k] for k in range(4)])
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], jitter([ds[k] for k in range(4, 8)])[0][:4])
