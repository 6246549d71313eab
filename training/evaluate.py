"""Retrieval metrics on embeddings (all vectors L2-normalised, so dot product = cosine)."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def recall_at_k(queries: np.ndarray, gallery: np.ndarray, relevant: Sequence[set[int]], ks=(1, 5, 10)) -> dict[int, float]:
    """Fraction of queries with at least one relevant gallery item in their top k.

    queries (Q, d), gallery (G, d); relevant[q] is the set of gallery rows that count as hits.
    """
    sims = queries @ gallery.T  # (Q, G)
    kmax = min(max(ks), gallery.shape[0])
    top = np.argsort(-sims, axis=1, kind="stable")[:, :kmax]  # (Q, kmax)
    out = {}
    for k in ks:
        hits = [bool(relevant[q] & set(top[q, :k].tolist())) for q in range(len(queries))]
        out[k] = float(np.mean(hits)) if hits else 0.0
    return out


def text_to_image_recall(encoder, images, captions: Sequence[str], ks=(1, 5, 10)) -> dict[int, float]:
    """Query with each image's caption; the hit is that image (one query per image)."""
    image_vecs = encoder.encode_images(images)
    unique = sorted(set(captions))
    text_vecs = encoder.encode_texts(unique)
    row = {c: i for i, c in enumerate(unique)}
    queries = text_vecs[[row[c] for c in captions]]
    return recall_at_k(queries, image_vecs, [{i} for i in range(len(captions))], ks)
