"""A bounded asynchronous HTTP load generator (aiohttp), for loopback targets only.

``concurrency`` workers share one request counter and one deadline: the run
stops after ``max_requests`` requests or ``max_seconds``, whichever comes
first, and every request is counted by its status (or exception type).
Latency percentiles are over successful (2xx) responses only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx

from benchmarks.stats import summary

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def check_loopback(base_url: str) -> None:
    """Refuse any target that is not this machine's loopback interface."""
    host = urlsplit(base_url).hostname
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"load tests run against loopback only, not {host!r}")


async def run_load(post: Callable[[Any], Awaitable[int]], bodies: Sequence[Any], *, concurrency: int,
                   max_requests: int, max_seconds: float, timeout: float = 30.0) -> dict:
    """Send ``bodies`` (cycled) through ``post`` with ``concurrency`` in flight; a summary dict.

    ``post(body)`` sends one request and returns its HTTP status. Returns
    ``requests``, ``seconds``, ``throughput_rps`` (2xx per second),
    ``status`` counts, ``latency_ms`` summary (p50/p95/p99 of 2xx),
    ``status_429``, ``status_503`` and ``other_5xx``.
    """
    if concurrency < 1 or max_requests < 1 or max_seconds <= 0:
        raise ValueError("concurrency and max_requests must be >= 1 and max_seconds > 0")
    if not bodies:
        raise ValueError("no request bodies")
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    next_index = 0
    start = time.perf_counter()
    deadline = start + max_seconds

    async def worker() -> None:
        nonlocal next_index
        while next_index < max_requests and time.perf_counter() < deadline:
            i = next_index
            next_index += 1
            t0 = time.perf_counter()
            try:
                # wait_for bounds the whole request (a client's own timeouts are per phase).
                code = str(await asyncio.wait_for(post(bodies[i % len(bodies)]), timeout))
            except (TimeoutError, httpx.HTTPError, aiohttp.ClientError, OSError) as exc:  # results too
                code = "Timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
            statuses[code] += 1
            if code.startswith("2"):
                latencies.append((time.perf_counter() - t0) * 1e3)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    ok = sum(v for k, v in statuses.items() if k.startswith("2"))
    return {
        "concurrency": concurrency,
        "requests": sum(statuses.values()),
        "ok": ok,
        "seconds": elapsed,
        "throughput_rps": ok / elapsed if elapsed > 0 else 0.0,
        "status": dict(sorted(statuses.items())),
        "status_429": statuses.get("429", 0),
        "status_503": statuses.get("503", 0),
        "other_5xx": sum(v for k, v in statuses.items() if k.startswith("5") and k != "503"),
        "errors": sum(v for k, v in statuses.items() if not k.isdigit()),
        "latency_ms": summary(latencies),
    }


@contextlib.asynccontextmanager
async def poster(base_url: str, path: str, concurrency: int, transport: httpx.AsyncBaseTransport | None = None,
                 headers: dict[str, str] | None = None) -> AsyncIterator[Callable[[Any], Awaitable[int]]]:
    """``post(body) -> status`` for :func:`run_load`, with enough connections for ``concurrency``.

    Over the network it is aiohttp: httpx's connection pool costs CPU that grows with
    the number of connections, and at concurrency 640 the generator, not the server,
    was what stalled (60-second timeouts). ``transport`` (httpx, e.g. an in-process
    ASGI app) is for tests; otherwise the target must be loopback."""
    if transport is not None:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=base_url, limits=limits, transport=transport,
                                     headers=headers) as client:
            async def post(body: Any) -> int:
                return (await client.post(path, json=body)).status_code
            yield post
        return
    check_loopback(base_url)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base_url, connector=connector, headers=headers) as session:
        async def post(body: Any) -> int:
            async with session.post(path, json=body) as resp:
                await resp.read()
                return resp.status
        yield post


def load(base_url: str, path: str, bodies: Sequence[Any], *, concurrency: int, max_requests: int,
         max_seconds: float, timeout: float = 30.0, transport: httpx.AsyncBaseTransport | None = None,
         headers: dict[str, str] | None = None) -> dict:
    """Synchronous wrapper: one client, one bounded run."""

    async def go() -> dict:
        async with poster(base_url, path, concurrency, transport, headers) as post:
            return await run_load(post, bodies, concurrency=concurrency, max_requests=max_requests,
                                  max_seconds=max_seconds, timeout=timeout)

    cpu0 = time.process_time()
    result = asyncio.run(go())
    # The generator shares the machine with the server: say how much CPU it took.
    result["client_cpu_s"] = time.process_time() - cpu0
    result["client_cpu_pct_of_one_core"] = 100.0 * result["client_cpu_s"] / max(result["seconds"], 1e-9)
    return result
