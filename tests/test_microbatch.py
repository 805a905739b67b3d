"""serving.microbatch: concurrent requests share model calls, each gets its own rows back."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from serving.microbatch import MicroBatcher


class SlowModel:
    """A stand-in for Scorer.proba: one row per text (its number), 20 ms a call, and it
    records every call and whether two calls ever overlapped."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.overlapped = False
        self._running = threading.Lock()
        self.fail_on = fail_on

    def __call__(self, texts: list[str]) -> np.ndarray:
        if not self._running.acquire(blocking=False):
            self.overlapped = True
            self._running.acquire()
        try:
            self.calls.append(list(texts))
            time.sleep(0.02)
            if self.fail_on in texts:
                raise RuntimeError("model failed")
            return np.array([[float(t.split("-")[1])] for t in texts])
        finally:
            self._running.release()


def test_concurrent_requests_share_calls_and_get_their_own_rows():
    model = SlowModel()
    batcher = MicroBatcher(model, max_messages=64, observe=(seen := []).append)

    async def main():
        requests = [[f"r{i}-{i * 10 + j}" for j in range(1 + i % 3)] for i in range(40)]
        return requests, await asyncio.gather(*(batcher(r) for r in requests))

    requests, results = asyncio.run(main())
    for request, rows in zip(requests, results, strict=True):
        assert rows[:, 0].tolist() == [float(t.split("-")[1]) for t in request]
    assert not model.overlapped, "two model calls ran at once"
    assert len(model.calls) < len(requests), "no request shared a call"
    assert all(len(call) <= 64 for call in model.calls)
    assert sum(seen) == sum(len(r) for r in requests) == batcher.messages and len(seen) == batcher.calls


def test_a_request_larger_than_the_cap_is_scored_alone():
    model = SlowModel()
    batcher = MicroBatcher(model, max_messages=4)

    async def main():
        return await asyncio.gather(batcher([f"a-{i}" for i in range(10)]), batcher(["b-99"]))

    big, small = asyncio.run(main())
    assert big[:, 0].tolist() == list(range(10)) and small[:, 0].tolist() == [99]
    assert sorted(len(c) for c in model.calls) == [1, 10]


def test_a_failed_call_fails_every_request_in_it_and_the_batcher_goes_on():
    model = SlowModel(fail_on="x-1")
    batcher = MicroBatcher(model)

    async def main():
        first = await asyncio.gather(batcher(["x-1"]), batcher(["y-2"]), return_exceptions=True)
        return first, await batcher(["z-3"])

    first, after = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) for r in first)
    assert after[:, 0].tolist() == [3]


def test_a_request_whose_client_left_does_not_stop_the_others():
    model = SlowModel()
    batcher = MicroBatcher(model)

    async def main():
        blocker = asyncio.ensure_future(batcher(["a-1"]))  # occupies the model
        await asyncio.sleep(0.005)
        gone = asyncio.ensure_future(batcher(["b-2"]))
        kept = asyncio.ensure_future(batcher(["c-3"]))
        await asyncio.sleep(0)
        gone.cancel()
        return await blocker, await kept, gone.cancelled()

    blocker, kept, cancelled = asyncio.run(main())
    assert blocker[:, 0].tolist() == [1] and kept[:, 0].tolist() == [3] and cancelled
    assert ["b-2"] not in model.calls and all("b-2" not in c for c in model.calls)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="max_messages"):
        MicroBatcher(SlowModel(), max_messages=0)
