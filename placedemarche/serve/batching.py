"""Dynamic batching: products arriving together are predicted together.

:class:`DynamicBatcher` queues the products of every request; one asyncio task takes the first
waiting product, gathers more until ``max_batch`` are queued or ``max_wait`` seconds have
passed, and runs the batch in a worker thread (the event loop never blocks on the model), so
the extractors run once per batch instead of once per request. Batches run one at a time: each
already uses every core its extractors are given.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence


@dataclass
class _Pending:
    item: Any
    future: asyncio.Future
    arrived: float = field(default_factory=time.perf_counter)


class DynamicBatcher:
    """Groups submitted items into batches for ``run_batch(items) -> results`` (same order,
    one result per item; an exception fails every item of its batch).

    ``on_batch(size)`` is called for each batch run (metrics). Start it inside a running loop
    with :meth:`start`; :meth:`stop` cancels the gathering task after the running batch.

    Usage::

        batcher = DynamicBatcher(model.predict_many, max_batch=32, max_wait=0.005)
        await batcher.start()
        answers = await batcher.submit([product1, product2])
    """

    def __init__(self, run_batch: Callable[[list], Sequence], max_batch: int = 32, max_wait: float = 0.005,
                 on_batch: Callable[[int], None] | None = None):
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task | None = None
        self._gate: asyncio.Event | None = None
        self._running: list[_Pending] = []

    async def start(self, ready: asyncio.Event | None = None) -> None:
        """Start gathering batches; with ``ready``, the first batch waits until it is set
        (requests arriving while the model warms up queue instead of failing)."""
        self._queue = asyncio.Queue()
        self._gate = ready
        self._task = asyncio.create_task(self._loop(), name="pm-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        left = list(self._running)
        while self._queue is not None and not self._queue.empty():
            left.append(self._queue.get_nowait())
        for pending in left:
            if not pending.future.done():
                pending.future.set_exception(RuntimeError("the service is shutting down"))
        self._running = []

    async def submit(self, items: Sequence) -> list:
        """Queue ``items`` and wait for their results, in order."""
        if self._queue is None or self._task is None:
            raise RuntimeError("the batcher is not running")
        loop = asyncio.get_running_loop()
        pending = [_Pending(item, loop.create_future()) for item in items]
        for p in pending:
            self._queue.put_nowait(p)
        return list(await asyncio.gather(*(p.future for p in pending)))

    async def _loop(self) -> None:
        assert self._queue is not None
        if self._gate is not None:
            await self._gate.wait()
        while True:
            batch = [await self._queue.get()]
            deadline = time.perf_counter() + self.max_wait
            while len(batch) < self.max_batch:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), left))
                except asyncio.TimeoutError:
                    break
            batch = [p for p in batch if not p.future.done()]  # their requests went away
            if not batch:
                continue
            if self.on_batch is not None:
                self.on_batch(len(batch))
            self._running = batch
            try:
                results = await asyncio.to_thread(self.run_batch, [p.item for p in batch])
            except Exception as exc:  # noqa: BLE001 - the batch's requests answer the error
                self._running = []
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            # (cancelled by stop(): _running keeps the batch, which stop() fails)
            self._running = []
            for p, result in zip(batch, results):
                if not p.future.done():
                    p.future.set_result(result)
