"""Retrieval metrics on embeddings (all vectors L2-normalised, so dot product = cosine)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def recall_at_k(queries: np.ndarray, gallery: np.ndarray, relevant: Sequence[set[int]],
                ks=(1, 5, 10)) -> dict[int, float]:
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


def image_to_text_recall(image_vecs: np.ndarray, text_vecs: np.ndarray, caption_index: Sequence[int], ks=(1, 5, 10)):
    """Query with each image; the hit is its own caption (row ``caption_index[i]`` of ``text_vecs``)."""
    return recall_at_k(image_vecs, text_vecs, [{c} for c in caption_index], ks)


def grouped_image_recall(image_vecs: np.ndarray, groups: Sequence, ks=(1, 5, 10)) -> dict[int, float]:
    """Image->image: each image queries all *other* images; hits share its group (e.g. the same emoji code).

    Images that are alone in their group are not used as queries.
    """
    sims = image_vecs @ image_vecs.T
    np.fill_diagonal(sims, -np.inf)  # never retrieve the query itself
    members: dict = {}
    for i, g in enumerate(groups):
        members.setdefault(g, set()).add(i)
    queries = [i for i, g in enumerate(groups) if len(members[g]) > 1]
    if not queries:
        return {k: float("nan") for k in ks}
    kmax = min(max(ks), len(groups) - 1)
    top = np.argsort(-sims[queries], axis=1, kind="stable")[:, :kmax]
    out = {}
    for k in ks:
        hits = [bool((members[groups[q]] - {q}) & set(top[n, :k].tolist())) for n, q in enumerate(queries)]
        out[k] = float(np.mean(hits))
    return out


def zero_shot_accuracy(image_vecs: np.ndarray, class_vecs: np.ndarray, labels: Sequence[int],
                       ks=(1, 5)) -> dict[int, float]:
    """Top-k accuracy of assigning each image to the most similar class embedding."""
    sims = image_vecs @ class_vecs.T  # (N, C)
    top = np.argsort(-sims, axis=1, kind="stable")[:, : max(ks)]
    labels = np.asarray(labels)
    return {k: float(np.mean((top[:, :k] == labels[:, None]).any(axis=1))) for k in ks if k <= class_vecs.shape[0]}
