"""In-process micro-batching: concurrent requests share one model call.

A worker scores with one onnxruntime session whose call already uses every
intra-op thread, so two calls at once only contend for the cores. The
:class:`MicroBatcher` runs one call at a time. Requests that arrive while it
runs wait in a queue, and the next call scores all of them together, up to
``max_messages``. ``max_wait_ms`` can hold a call back for more arrivals; the
default 0 never delays a request on an idle worker, and batches form by
themselves under load, exactly when they pay.

This is what BentoML's adaptive batching does for a ``batchable`` API, without
its extra HTTP hop through the proxy (``QORGAN_ADAPTIVE_BATCHING=1`` keeps that
path; see ``serving.service``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import anyio.to_thread
import numpy as np


class MicroBatcher:
    """``await batcher(texts)`` → ``fn(texts)``, with concurrent calls merged into one ``fn`` call."""

    def __init__(self, fn: Callable[[list[str]], np.ndarray], max_messages: int = 256,
                 max_wait_ms: float = 0.0, observe: Callable[[int], None] | None = None) -> None:
        if max_messages < 1 or max_wait_ms < 0:
            raise ValueError("max_messages must be >= 1 and max_wait_ms >= 0")
        self.fn = fn
        self.max_messages = max_messages
        self.max_wait_s = max_wait_ms / 1000.0
        #: Called with the number of messages of every model call (a metrics histogram).
        self.observe = observe
        self._queue: asyncio.Queue[tuple[Sequence[str], asyncio.Future]] | None = None
        self._worker: asyncio.Task | None = None
        #: Model calls made and messages scored: the mean batch size is their ratio.
        self.calls = 0
        self.messages = 0

    async def __call__(self, texts: Sequence[str]) -> np.ndarray:
        if self._queue is None:  # made inside the running event loop, on first use
            self._queue = asyncio.Queue()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run())
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((texts, future))
        return await future

    async def _run(self) -> None:
        queue, loop = self._queue, asyncio.get_running_loop()
        carry = None  # a request that would have overfilled the previous call
        while True:
            batch = [carry if carry is not None else await queue.get()]
            carry = None
            size = len(batch[0][0])
            deadline = loop.time() + self.max_wait_s
            while size < self.max_messages:
                try:
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(queue.get(), left)
                    except TimeoutError:
                        break
                if size + len(item[0]) > self.max_messages:
                    carry = item
                    break
                batch.append(item)
                size += len(item[0])
            await self._score(batch)

    async def _score(self, batch: list[tuple[Sequence[str], asyncio.Future]]) -> None:
        batch = [(texts, fut) for texts, fut in batch if not fut.cancelled()]  # clients that left
        if not batch:
            return
        texts = [t for request_texts, _ in batch for t in request_texts]
        try:
            proba = await anyio.to_thread.run_sync(self.fn, texts)
        except Exception as exc:  # every waiting request gets the failure; none hangs
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        self.calls += 1
        self.messages += len(texts)
        if self.observe is not None:
            self.observe(len(texts))
        start = 0
        for request_texts, fut in batch:
            end = start + len(request_texts)
            if not fut.done():
                fut.set_result(proba[start:end])
            start = end
