"""Judging frozen features with labels: a seeded stratified split, weighted k-NN and a linear probe.

These are the standard evaluations of self-supervised encoders: the encoder never
sees a label; the labels of the *train* part only fit the k-NN memory bank or the
logistic regression, and accuracy is measured on the held-out *test* part.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def stratified_split(labels: Sequence, test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test), each sorted: ``round(test_fraction * n_c)`` items of every class c go to test,
    drawn with ``seed``. A class with one item stays in train. The same labels, fraction and seed always
    give the same split, so a training run can leave out exactly the images an evaluation tests on."""
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    labels = np.asarray([str(v) for v in labels])
    rng = np.random.default_rng(seed)
    test: list[int] = []
    for c in sorted(set(labels.tolist())):
        members = np.flatnonzero(labels == c)
        n_test = min(int(round(test_fraction * len(members))), len(members) - 1)
        test.extend(rng.permutation(members)[:n_test].tolist())
    test_idx = np.array(sorted(test), dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
    return train_idx, test_idx


def encode_labels(labels: Sequence) -> tuple[np.ndarray, list[str]]:
    """String labels -> (int array, sorted class names)."""
    classes = sorted({str(v) for v in labels})
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[str(v)] for v in labels], dtype=np.int64), classes


def knn_predict(train_feats: np.ndarray, train_labels: np.ndarray, test_feats: np.ndarray, k: int = 20,
                temperature: float = 0.07, num_classes: int | None = None, chunk: int = 1024) -> np.ndarray:
    """Weighted k-NN (InstDisc / SimCLR / DINO): the k most cosine-similar train items vote for their class
    with weight exp(sim / temperature); ties go to the lower class index.

    train_feats (N, d), test_feats (Q, d): L2-normalised; train_labels (N,) ints. Returns (Q,) ints."""
    train = torch.from_numpy(np.ascontiguousarray(train_feats, dtype=np.float32))
    labels = torch.from_numpy(np.asarray(train_labels, dtype=np.int64))
    c = int(num_classes or labels.max().item() + 1)
    k = min(k, len(train))
    out = []
    for start in range(0, len(test_feats), chunk):
        q = torch.from_numpy(np.ascontiguousarray(test_feats[start:start + chunk], dtype=np.float32))
        sims, idx = (q @ train.T).topk(k, dim=1)  # (q, k)
        votes = torch.zeros(len(q), c).scatter_add_(1, labels[idx], (sims / temperature).exp())  # (q, C)
        out.append(votes.argmax(dim=1))
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.int64)


def knn_accuracy(train_feats: np.ndarray, train_labels: np.ndarray, test_feats: np.ndarray,
                 test_labels: np.ndarray, k: int = 20, temperature: float = 0.07) -> float:
    num_classes = int(max(np.max(train_labels), np.max(test_labels)) + 1)
    pred = knn_predict(train_feats, train_labels, test_feats, k, temperature, num_classes)
    return float(np.mean(pred == np.asarray(test_labels)))


def linear_probe(train_feats: np.ndarray, train_labels: np.ndarray, weight_decay: float = 1e-4,
                 max_iter: int = 300, num_classes: int | None = None):
    """Multinomial logistic regression on frozen features, fitted with full-batch L-BFGS.

    Features are standardised with the train statistics; the objective is the mean cross-entropy plus
    ``weight_decay / 2 * ||W||^2`` (the bias is not decayed). Returns ``predict(feats) -> (Q,) ints``."""
    x = torch.from_numpy(np.asarray(train_feats, dtype=np.float64))
    y = torch.from_numpy(np.asarray(train_labels, dtype=np.int64))
    c = int(num_classes or y.max().item() + 1)
    mean, std = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-6)
    xs = (x - mean) / std  # (N, d)
    w = torch.zeros(x.shape[1], c, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(c, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-12)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(xs @ w + b, y) + 0.5 * weight_decay * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    w, b = w.detach(), b.detach()

    def predict(feats: np.ndarray) -> np.ndarray:
        z = (torch.from_numpy(np.asarray(feats, dtype=np.float64)) - mean) / std
        return (z @ w + b).argmax(dim=1).numpy()

    return predict


def linear_probe_accuracy(train_feats: np.ndarray, train_labels: np.ndarray, test_feats: np.ndarray,
                          test_labels: np.ndarray, weight_decay: float = 1e-4, max_iter: int = 300) -> float:
    num_classes = int(max(np.max(train_labels), np.max(test_labels)) + 1)
    predict = linear_probe(train_feats, train_labels, weight_decay, max_iter, num_classes)
    return float(np.mean(predict(test_feats) == np.asarray(test_labels)))
