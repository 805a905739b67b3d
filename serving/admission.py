"""Admission control: at most ``QORGAN_MAX_CONCURRENCY`` requests in a worker, counted
once their body has arrived.

BentoML's ``traffic.max_concurrency`` counts a request from its first byte, so
a hundred clients that send headers and then trickle (or never send) their
bodies held every slot, and the service answered 429 to everyone else: a
denial of service for the price of a hundred idle sockets. This limit sits
after the body has been read (``BodySizeLimitMiddleware``, which also bounds how
long a body may take), so only requests that the service can run count. Over
the limit a request gets an immediate 429 with ``Retry-After``.
"""

from __future__ import annotations

from serving.auth import EXEMPT_PATHS, is_internal_call, send_json
from serving.settings import ServiceSettings

TOO_MANY = "too many requests in flight; retry shortly"


class ConcurrencyLimitMiddleware:
    """429 beyond ``limit`` requests in flight (probes, metrics and the service's own
    in-process hop are never refused: a running /score may need that hop to finish)."""

    def __init__(self, app, limit: int | None = None) -> None:
        self.app = app
        self.limit = ServiceSettings.from_env().max_concurrency if limit is None else limit
        self.in_flight = 0

    async def __call__(self, scope, receive, send) -> None:
        if (scope["type"] != "http" or scope.get("path", "").rstrip("/") in EXEMPT_PATHS
                or is_internal_call(scope)):
            return await self.app(scope, receive, send)
        if self.in_flight >= self.limit:
            return await send_json(send, 429, {"error": TOO_MANY}, [(b"retry-after", b"1")])
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
