import numpy as np

from training.evaluate import recall_at_k


def test_recall_at_k_by_hand():
    gallery = np.eye(4, dtype=np.float32)
    # query 0 is closest to item 0; query 1 prefers item 2, then item 1; query 2 points at item 3 only
    queries = np.array([[1, 0, 0, 0], [0, 0.6, 0.8, 0], [0, 0, 0, 1]], dtype=np.float32)
    relevant = [{0}, {1}, {2}]
    r = recall_at_k(queries, gallery, relevant, ks=(1, 2, 4))
    assert r == {1: 1 / 3, 2: 2 / 3, 4: 1.0}
