"""API-key authentication, the request body checks (size, media type), and the
bind-address guard.

The open-source BentoML server has neither authentication nor a body size
limit, and it answers 500 to a body it cannot parse as its declared media type;
all three are plain ASGI middleware added with ``add_asgi_middleware``.

Keys come from ``QORGAN_API_KEYS`` (comma-separated) and/or
``QORGAN_API_KEYS_FILE`` (one key per line, ``#`` comments). Clients send
``Authorization: Bearer <key>``. Health and metrics paths and CORS preflight
(``OPTIONS``) are exempt. With no key configured, authentication is off and
the server refuses to listen on anything but a loopback address.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.settings import ENV_API_KEYS, ENV_API_KEYS_FILE, ServiceSettings

logger = logging.getLogger(__name__)

#: Paths that never need a key: probes and the Prometheus scrape.
EXEMPT_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/metrics"})

#: A random per-process token the service uses for its own in-process calls (the
#: adaptive-batching hop goes back through the ASGI app); never leaves the process.
INTERNAL_TOKEN = secrets.token_urlsafe(32)

#: Methods whose request body is read and so limited.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class InsecureBindError(RuntimeError):
    """The server would listen on a non-loopback address without any API key."""


@dataclass(frozen=True)
class ApiKeys:
    """The accepted API keys; compared in constant time."""

    keys: tuple[bytes, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ApiKeys:
        """Keys from ``QORGAN_API_KEYS`` and the file named by ``QORGAN_API_KEYS_FILE``."""
        env = os.environ if environ is None else environ
        keys = [k.strip() for k in env.get(ENV_API_KEYS, "").split(",")]
        path = env.get(ENV_API_KEYS_FILE, "").strip()
        if path:
            try:
                lines = Path(path).read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise ValueError(f"{ENV_API_KEYS_FILE}={path} cannot be read: {exc.strerror}") from None
            keys += [line.strip() for line in lines if not line.lstrip().startswith("#")]
        return cls.of(keys)

    @classmethod
    def of(cls, keys: Iterable[str]) -> ApiKeys:
        return cls(tuple(dict.fromkeys(k.encode("utf-8") for k in keys if k)))

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def accepts(self, presented: str) -> bool:
        """Whether ``presented`` is one of the keys (every key is compared, in constant time)."""
        candidate = presented.encode("utf-8")
        ok = False
        for key in self.keys:
            ok |= hmac.compare_digest(candidate, key)
        return ok


def _header(scope: Mapping[str, Any], name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value
    return None


async def send_json(send, status: int, body: dict[str, Any], headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    payload = json.dumps(body).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode()), *headers]})
    await send({"type": "http.response.body", "body": payload})


def bearer_token(scope: Mapping[str, Any]) -> str:
    """The token of an ``Authorization: Bearer <token>`` header ("" if there is none)."""
    auth = (_header(scope, b"authorization") or b"").decode("latin-1")
    scheme, _, token = auth.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def is_internal_call(scope: Mapping[str, Any]) -> bool:
    """Whether a request is the service's own in-process hop (it carries INTERNAL_TOKEN)."""
    return hmac.compare_digest(bearer_token(scope).encode(), INTERNAL_TOKEN.encode())


class ApiKeyMiddleware:
    """Require ``Authorization: Bearer <key>`` on every path but health, metrics and OPTIONS."""

    def __init__(self, app, keys: ApiKeys | None = None) -> None:
        self.app = app
        self.keys = ApiKeys.from_env() if keys is None else keys
        self._accepted = ApiKeys(self.keys.keys + (INTERNAL_TOKEN.encode(),))

    async def __call__(self, scope, receive, send) -> None:
        if (scope["type"] != "http" or not self.keys.enabled or scope.get("method") == "OPTIONS"
                or scope.get("path", "").rstrip("/") in EXEMPT_PATHS):
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope)
        if token and self._accepted.accepts(token):
            await self.app(scope, receive, send)
            return
        await send_json(send, 401, {"error": "missing or invalid API key; send 'Authorization: Bearer <key>'"},
                         [(b"www-authenticate", b'Bearer realm="qorgan"')])


class BodySizeLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with 413, before the app parses them,
    and bodies that take longer than ``timeout_s`` to arrive with 408.

    The body is read here (up to the limit) and replayed to the app, so a
    chunked upload without ``Content-Length`` is limited too.
    """

    def __init__(self, app, max_bytes: int | None = None, timeout_s: float | None = None) -> None:
        self.app = app
        settings = ServiceSettings.from_env()
        self.max_bytes = settings.max_body_bytes if max_bytes is None else max_bytes
        self.timeout_s = settings.body_timeout_s if timeout_s is None else timeout_s

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("method") not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        too_large = {"error": f"request body is larger than {self.max_bytes} bytes"}
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await send_json(send, 400, {"error": "invalid Content-Length header"})
                return
            if size > self.max_bytes:
                await send_json(send, 413, too_large)
                return
        chunks, total = [], 0
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        while True:
            try:
                message = await asyncio.wait_for(receive(), deadline - asyncio.get_running_loop().time())
            except TimeoutError:
                await send_json(send, 408, {"error": f"request body not received within {self.timeout_s:g} s"},
                                [(b"connection", b"close")])
                return
            if message["type"] != "http.request":  # client went away
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                await send_json(send, 413, too_large)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


#: The only media type a request body may have.
JSON_MEDIA_TYPE = b"application/json"


class JsonBodyMiddleware:
    """Refuse a request body that is not declared ``application/json`` with 415.

    Without it BentoML picks a parser by the declared type and answers 500 to a
    ``multipart/form-data`` body with no boundary. Refusing ``text/plain``, form
    types and a missing type also makes every cross-origin browser POST need a CORS
    preflight, which this server never grants: a web page cannot use a keyless
    loopback server through the visitor's browser.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope.get("method") in _BODY_METHODS:
            declared = (_header(scope, b"content-type") or b"").split(b";")[0].strip().lower()
            if declared != JSON_MEDIA_TYPE:
                await send_json(send, 415, {"error": "request body must be JSON, sent with "
                                                      "'Content-Type: application/json'"})
                return
        await self.app(scope, receive, send)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only accepts local connections."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(hosts: Iterable[str], keys: ApiKeys) -> None:
    """Raise :class:`InsecureBindError` when listening on a non-loopback host without keys."""
    if keys.enabled:
        return
    exposed = sorted({h for h in hosts if not is_loopback(h)})
    if exposed:
        raise InsecureBindError(
            f"refusing to serve on {', '.join(exposed)} without an API key: anyone who can reach "
            f"this address could score messages. Set {ENV_API_KEYS} (comma-separated) or "
            f"{ENV_API_KEYS_FILE}, or bind to a loopback address (--host 127.0.0.1).")


def serve_command_host() -> str | None:
    """The host ``bentoml serve`` is about to bind, when called inside that command."""
    try:
        import click
    except ImportError:  # pragma: no cover - bentoml depends on click
        return None
    ctx = click.get_current_context(silent=True)
    while ctx is not None and "host" not in ctx.params:
        ctx = ctx.parent
    if ctx is None:
        return None
    host = ctx.params.get("host")
    if host:
        return host
    from bentoml._internal.configuration.containers import BentoMLContainer

    return BentoMLContainer.http.host.get()


def listening_hosts() -> list[str]:
    """Addresses this process listens on (a server worker inherits its socket)."""
    import psutil

    proc = psutil.Process()
    try:
        conns = (proc.net_connections(kind="inet") if hasattr(proc, "net_connections")
                 else proc.connections(kind="inet"))
    except psutil.Error as exc:  # the command-line check still applies
        logger.warning("cannot list this process's sockets (%s); bind address not re-checked", exc)
        return []
    return [c.laddr.ip for c in conns if c.status == psutil.CONN_LISTEN and c.laddr]
