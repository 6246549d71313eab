"""Concurrent queries batched into one encoder call.

Requests submit one item each and await their own row of the result. A single
drain task per batcher runs the encoder in a worker thread on everything that is
waiting (up to ``max_batch``); requests that arrive meanwhile form the next batch.
So a lone request waits for nothing, and under load the encoder sees full
batches instead of many calls of one, one at a time instead of all at once.

A request may hand over what it does next with its row (``then``, e.g. the index
search): for a batch of one it runs in the same worker thread, right after the
encoder, which saves a second hop between the event loop and the thread pool; in a
larger batch each request runs its own ``then`` in the pool, so they proceed in
parallel and the next batch is not held up.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import numpy as np
from starlette.concurrency import run_in_threadpool

T = TypeVar("T")


class Batcher(Generic[T]):
    """``await batcher.submit(item)`` -> ``fn([..., item, ...])[i]``, with concurrent submits sharing calls."""

    def __init__(self, fn: Callable[[Sequence[T]], np.ndarray], max_batch: int = 32,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.fn = fn  # items -> (B, ...) array, one row per item
        self.max_batch = max_batch
        self.calls = 0  # how many times fn ran (batches), for tests and metrics
        self.on_batch = on_batch  # told each batch's size (metrics)
        self._pending: deque[tuple[T, Callable | None, asyncio.Future]] = deque()
        self._drainer: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def submit(self, item: T, then: Callable[[np.ndarray], Any] | None = None) -> Any:
        """``fn([.., item, ..])[i]``, or ``then`` of it (run off the event loop) when given."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (e.g. the app started again): forget the old one's state
            self._loop, self._pending, self._drainer = loop, deque(), None
        future = loop.create_future()
        self._pending.append((item, then, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = loop.create_task(self._drain())
        done, value = await future
        if then is None or done:
            return value
        return await run_in_threadpool(then, value)

    async def _drain(self) -> None:
        await asyncio.sleep(0)  # let requests that arrived in the same tick join the first batch
        while self._pending:
            batch = [self._pending.popleft() for _ in range(min(len(self._pending), self.max_batch))]
            batch = [entry for entry in batch if not entry[2].done()]  # drop cancelled requests
            if batch:
                await self._run(batch)

    async def _run(self, batch: list[tuple[T, Callable | None, asyncio.Future]]) -> None:
        then = batch[0][1] if len(batch) == 1 else None
        try:
            self.calls += 1
            if self.on_batch is not None:
                self.on_batch(len(batch))
            rows = await run_in_threadpool(self._call, [item for item, _, _ in batch], then)
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][2], exception=exc)
                return
            for one in batch:  # one bad item must not fail the others: retry them alone
                await self._run([one])
            return
        if then is not None:  # a batch of one whose follow-up already ran (or failed) in the worker thread
            ok, value = rows
            if ok:
                _settle(batch[0][2], result=(True, value))
            else:
                _settle(batch[0][2], exception=value)
            return
        for (_, _, fut), row in zip(batch, rows):
            _settle(fut, result=(False, row))

    def _call(self, items: list[T], then: Callable | None):
        rows = self.fn(items)
        if len(rows) != len(items):
            raise RuntimeError(f"batch function returned {len(rows)} rows for {len(items)} items")
        if then is None:
            return rows
        try:
            return True, then(rows[0])
        except Exception as exc:  # the follow-up's error is the request's, not the encoder's: no retry
            return False, exc


def _settle(fut: asyncio.Future, result: object = None, exception: BaseException | None = None) -> None:
    if fut.done():  # the request went away while its batch ran
        return
    if exception is not None:
        fut.set_exception(exception)
    else:
        fut.set_result(result)
