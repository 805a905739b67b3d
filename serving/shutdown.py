"""Graceful shutdown: on SIGTERM, finish what is running, refuse what is new, exit in time.

Left to itself, a BentoML worker (uvicorn) that gets SIGTERM stops accepting
connections at once and then waits, without a bound, for its running requests.
New connections sit unanswered in the listening socket's backlog until the
process is gone, and ``/readyz`` goes silent instead of saying "not ready".

:class:`GracefulShutdownMiddleware` puts a drain in front of that:

1. SIGTERM marks the worker as draining. Requests already running go on.
2. While draining, every new request, ``/readyz`` included, gets an immediate
   ``503`` with ``Retry-After`` and ``Connection: close``, so that a client or
   load balancer retries elsewhere. ``/livez`` still answers 200: the process is
   alive, just leaving.
3. When the last running request has finished, or the grace period
   (``QORGAN_SHUTDOWN_GRACE_S``) has passed, uvicorn's own shutdown starts.
   Requests still running at the end of the grace period are cancelled, so the
   worker exits within it.

The handler is installed when the ASGI lifespan starts, in the worker's main
thread, over the one uvicorn installed; it hands the signal on to it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from typing import Any

from serving.auth import is_internal_call, send_json
from serving.settings import ServiceSettings

logger = logging.getLogger(__name__)

#: Paths that answer normally while draining: the process is alive until it exits.
LIVE_PATHS = frozenset({"/livez", "/healthz"})
DRAINING_DETAIL = "The service is shutting down; retry the request on another instance."


class GracefulShutdownMiddleware:
    """Counts running HTTP requests and drains them on SIGTERM (see the module docstring)."""

    def __init__(self, app, grace_s: float | None = None) -> None:
        self.app = app
        self.grace_s = ServiceSettings.from_env().shutdown_grace_s if grace_s is None else grace_s
        self.running = 0
        self.draining = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handed_on: Any = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            self._install()
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        # The adaptive-batching hop of a running /score comes back through this app: let it in.
        if self.draining and scope.get("path") not in LIVE_PATHS and not is_internal_call(scope):
            return await send_json(send, 503, {"error": DRAINING_DETAIL},
                                   [(b"retry-after", b"1"), (b"connection", b"close")])
        self.running += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.running -= 1

    # -- the signal ----------------------------------------------------------------

    def _install(self) -> None:
        """Take SIGTERM over from uvicorn (once, and only where signals can be taken)."""
        if self._loop is not None or threading.current_thread() is not threading.main_thread():
            return
        self._loop = asyncio.get_running_loop()
        self._handed_on = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        if self.draining:  # a second SIGTERM: no more waiting
            self._hand_on(signum, frame, force=True)
            return
        self.draining = True
        logger.info("SIGTERM: draining %d running request(s), at most %.0f s", self.running, self.grace_s)
        self._loop.call_soon_threadsafe(lambda: self._loop.create_task(self._drain(signum, frame)))

    async def _drain(self, signum: int, frame: Any) -> None:
        deadline = time.monotonic() + self.grace_s
        while self.running and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        left = self.running
        if left:
            logger.warning("grace period of %.0f s over: cancelling %d running request(s)", self.grace_s, left)
        self._hand_on(signum, frame, force=bool(left))

    def _hand_on(self, signum: int, frame: Any, *, force: bool) -> None:
        """Start the server's own shutdown; ``force`` makes it cancel running requests
        (uvicorn's rule: an interrupt after a shutdown request forces the exit)."""
        handler = self._handed_on
        if not callable(handler):  # SIG_DFL / SIG_IGN: no server of ours to hand on to
            raise SystemExit(128 + signum)
        handler(signum, frame)
        if force:
            handler(signal.SIGINT, frame)

