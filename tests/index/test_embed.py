import numpy as np

from index.decode import DecodeLimits
from index.embed import embed_items
from index.source_item import SourceItem
from training.encoder import load_encoder


def test_batches_keep_order_and_report_bad_files(micro_encoder, odd_files):
    enc = load_encoder(micro_encoder)
    names = ["good.png", "zero.jpg", "cmyk.jpg", "text.jpg", "bomb.png", "animated.gif", "truncated.png"]
    items = [SourceItem(odd_files[n]) for n in names] + [SourceItem(odd_files["good.png"].with_name("gone.png"))]
    batches = list(embed_items(enc, items, batch_size=3, workers=0, limits=DecodeLimits(max_pixels=10_000_000)))
    assert len(batches) == 3
    good = [it.path.name for b in batches for it in b.items]
    assert good == ["good.png", "cmyk.jpg", "animated.gif"]
    failures = {it.path.name: reason.split(":")[0] for b in batches for it, reason in b.failures}
    assert failures == {"zero.jpg": "empty", "text.jpg": "not_an_image", "bomb.png": "too_many_pixels",
                        "truncated.png": "corrupt", "gone.png": "unreadable"}
    vecs = np.concatenate([b.vectors for b in batches])
    np.testing.assert_allclose(vecs, enc.encode_images([enc_open(odd_files[n]) for n in good]), atol=1e-5)
    assert all(len(h) == 64 for b in batches for h in b.content_hashes)


def test_worker_processes_give_the_same_vectors(micro_encoder, odd_files):
    enc = load_encoder(micro_encoder)
    items = [SourceItem(odd_files[n]) for n in ["good.png", "cmyk.jpg", "sixteen.png"]]
    inline = np.concatenate([b.vectors for b in embed_items(enc, items, batch_size=2, workers=0)])
    forked = np.concatenate([b.vectors for b in embed_items(enc, items, batch_size=2, workers=2)])
    np.testing.assert_allclose(inline, forked, atol=1e-6)


def enc_open(path):
    from index.decode import open_image

    return open_image(path)
