"""Service settings, read once from the environment.

Every variable the HTTP service reads is named here; ``README`` documents them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from models.bundle import DEFAULT_BUNDLE_DIR

#: Path of the model bundle the service loads.
ENV_BUNDLE = "QORGAN_BUNDLE"
#: Server worker processes (each loads its own scorer).
ENV_WORKERS = "QORGAN_WORKERS"
#: onnxruntime intra-op threads per worker; default: available cores ÷ workers.
ENV_THREADS = "QORGAN_INTRA_OP_THREADS"
#: Largest accepted request body in bytes.
ENV_MAX_BODY = "QORGAN_MAX_BODY_BYTES"
#: Seconds a client has to send a whole request body (then 408).
ENV_BODY_TIMEOUT = "QORGAN_BODY_TIMEOUT_S"
#: Requests a worker runs or queues at once, counted once their body has arrived (then 429).
ENV_MAX_CONCURRENCY = "QORGAN_MAX_CONCURRENCY"
#: Comma-separated API keys, and a file with one key per line.
ENV_API_KEYS = "QORGAN_API_KEYS"
ENV_API_KEYS_FILE = "QORGAN_API_KEYS_FILE"
#: ``1`` routes /score through the batchable /proba endpoint (BentoML adaptive
#: batching merges concurrent requests); ``0`` (default) merges them in process
#: (serving.microbatch).
ENV_ADAPTIVE_BATCHING = "QORGAN_ADAPTIVE_BATCHING"
#: In-process micro-batching (serving.microbatch): most messages per model call, and
#: how long a call may wait for more requests (0: never; batches form under load).
ENV_BATCH_MAX_MESSAGES = "QORGAN_BATCH_MAX_MESSAGES"
ENV_BATCH_WAIT_MS = "QORGAN_BATCH_WAIT_MS"
#: Seconds a worker that got SIGTERM waits for its running requests before it
#: cancels them and exits (serving.shutdown). The default leaves Kubernetes'
#: default 30-second termination grace period room to spare.
ENV_SHUTDOWN_GRACE = "QORGAN_SHUTDOWN_GRACE_S"
DEFAULT_SHUTDOWN_GRACE_S = 25

# Request limits (messages per request, characters per message and id) are the
# bundle's: bundle.json → serving, read through models.bundle.Bundle.limits.
#: Largest request body: 256 messages × 5,000 characters (the default limits),
#: JSON-escaped (up to 6 bytes a character), plus framing.
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024


def _int(environ: Mapping[str, str], name: str, default: int | None, minimum: int = 1) -> int | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in ("0", "1", "true", "false", "yes", "no", "on", "off"):
        raise ValueError(f"{name} must be 0 or 1, got {raw!r}")
    return raw in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class ServiceSettings:
    """What the service needs to start: bundle path, workers, threads, body limit, shutdown grace."""

    bundle: Path = Path(DEFAULT_BUNDLE_DIR)
    workers: int = 1
    intra_op_threads: int | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    body_timeout_s: int = 30
    max_concurrency: int = 64
    adaptive_batching: bool = False
    batch_max_messages: int = 256
    batch_wait_ms: int = 0
    shutdown_grace_s: int = DEFAULT_SHUTDOWN_GRACE_S

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServiceSettings:
        env = os.environ if environ is None else environ
        return cls(
            bundle=Path(env.get(ENV_BUNDLE, "").strip() or DEFAULT_BUNDLE_DIR),
            workers=_int(env, ENV_WORKERS, 1),
            intra_op_threads=_int(env, ENV_THREADS, None),
            max_body_bytes=_int(env, ENV_MAX_BODY, DEFAULT_MAX_BODY_BYTES),
            body_timeout_s=_int(env, ENV_BODY_TIMEOUT, 30),
            max_concurrency=_int(env, ENV_MAX_CONCURRENCY, 64),
            adaptive_batching=_flag(env, ENV_ADAPTIVE_BATCHING, False),
            batch_max_messages=_int(env, ENV_BATCH_MAX_MESSAGES, 256),
            batch_wait_ms=_int(env, ENV_BATCH_WAIT_MS, 0, minimum=0),
            shutdown_grace_s=_int(env, ENV_SHUTDOWN_GRACE, DEFAULT_SHUTDOWN_GRACE_S),
        )
