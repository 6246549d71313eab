"""Concurrent queries share encoder calls, and each gets its own answer."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.batching import Batcher


class Recorder:
    """A batch function (items -> one row each) that remembers the batches it saw."""

    def __init__(self, fail_on: object = None) -> None:
        self.batches: list[list] = []
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def __call__(self, items):
        with self.lock:
            self.batches.append(list(items))
        if self.fail_on in items:
            raise ValueError(f"cannot take {self.fail_on!r}")
        return np.array([[float(x), float(x) * 2] for x in items])  # (B, 2)


def test_concurrent_submits_share_one_call_and_get_their_own_rows():
    fn = Recorder()
    batcher = Batcher(fn, max_batch=32)

    async def main():
        return await asyncio.gather(*(batcher.submit(i) for i in range(10)))

    rows = asyncio.run(main())
    assert [list(r) for r in rows] == [[i, 2 * i] for i in range(10)]
    assert fn.batches == [list(range(10))]
    assert batcher.calls == 1


def test_batches_are_capped_and_later_arrivals_form_the_next_batch():
    fn = Recorder()
    batcher = Batcher(fn, max_batch=4)

    async def main():
        return await asyncio.gather(*(batcher.submit(i) for i in range(10)))

    rows = asyncio.run(main())
    assert [r[0] for r in rows] == list(range(10))
    assert [len(b) for b in fn.batches] == [4, 4, 2]


def test_a_lone_request_runs_at_once_and_sequential_ones_run_alone():
    fn = Recorder()
    batcher = Batcher(fn)

    async def main():
        return [await batcher.submit(i) for i in range(3)]

    assert [r[0] for r in asyncio.run(main())] == [0, 1, 2]
    assert fn.batches == [[0], [1], [2]]


def test_one_bad_item_fails_only_its_own_request():
    fn = Recorder(fail_on=3)
    batcher = Batcher(fn)

    async def main():
        return await asyncio.gather(*(batcher.submit(i) for i in range(5)), return_exceptions=True)

    results = asyncio.run(main())
    assert isinstance(results[3], ValueError)
    assert [r[0] for i, r in enumerate(results) if i != 3] == [0, 1, 2, 4]


def test_a_batcher_survives_a_new_event_loop():
    batcher = Batcher(Recorder())
    for _ in range(2):  # e.g. the app's lifespan runs again under another loop
        assert asyncio.run(batcher.submit(5))[0] == 5


def test_cancelled_requests_are_skipped():
    fn = Recorder()
    batcher = Batcher(fn)

    async def main():
        doomed = asyncio.ensure_future(batcher.submit(1))
        kept = asyncio.ensure_future(batcher.submit(2))
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        return await kept

    assert asyncio.run(main())[0] == 2
    assert fn.batches == [[2]]


def test_concurrent_http_queries_get_the_same_answers_as_sequential_ones(client, sample_png):
    queries = ["dog face", "red heart", "flag", "keycap 3", "smiling face", "car", "tree", "moon"]
    alone = [client.post("/v1/search/text", json={"query": q, "k": 5}).json()["results"] for q in queries]
    image = sample_png.read_bytes()

    def text(q):
        return client.post("/v1/search/text", json={"query": q, "k": 5}).json()["results"]

    def picture(_):
        return client.post("/v1/search/image", files={"file": ("q.png", image, "image/png")}).json()["results"]

    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(text, queries))
        pictures = list(pool.map(picture, range(8)))
    for a, b in zip(alone, together):  # batched maths may differ in the last float bits: only near-ties may swap
        assert np.allclose([h["score"] for h in a], [h["score"] for h in b], atol=1e-5)
        for x, y in zip(a, b):
            assert x["id"] == y["id"] or abs(x["score"] - y["score"]) < 1e-5
    assert all(p[0]["source"] == sample_png.name for p in pictures)


def test_a_follow_up_runs_in_the_encoder_thread_for_a_lone_request_and_in_the_pool_otherwise():
    fn = Recorder()
    batcher = Batcher(fn, max_batch=32)
    ran_in: list[tuple[int, str]] = []

    def then(row):
        ran_in.append((int(row[0]), threading.current_thread().name))
        if row[0] == 3:
            raise LookupError("nothing for 3")
        return float(row[1]) + 0.5

    async def lone():
        return await batcher.submit(7, then=then)

    assert asyncio.run(lone()) == 14.5
    # a batch of one: encoder and follow-up in one worker-thread call
    assert batcher.calls == 1 and len(ran_in) == 1

    async def together():
        return await asyncio.gather(*(batcher.submit(i, then=then) for i in range(5)), return_exceptions=True)

    results = asyncio.run(together())
    assert fn.batches[-1] == [0, 1, 2, 3, 4]  # still one encoder call for the five
    assert results[:3] == [0.5, 2.5, 4.5] and results[4] == 8.5
    assert isinstance(results[3], LookupError)  # a follow-up's error is its own request's, no retry
    assert len(fn.batches) == 2
    assert sorted(i for i, _ in ran_in[1:]) == [0, 1, 2, 3, 4]


def test_a_failing_follow_up_of_a_lone_request_is_not_retried():
    fn = Recorder()
    batcher = Batcher(fn)

    def then(row):
        raise LookupError("no such thing")

    async def main():
        return await batcher.submit(1, then=then)

    with pytest.raises(LookupError):
        asyncio.run(main())
    assert fn.batches == [[1]]
