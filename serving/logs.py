"""Log hygiene: a refused request is one INFO line, not an ERROR with a traceback.

BentoML logs every exception an endpoint raises through
``bentoml._internal.server.http_app.log_exception``, at ERROR with the full
traceback, also when the exception is the client's fault (a body that fails
validation, an unknown policy). Any client could fill the disk that way, and a
traceback is the wrong signal for an operator. :class:`RefusedRequestFilter`
turns those records into one INFO line naming the path, the method and the kind
of error, and drops the traceback. Nothing of the request (no text, no key, no
client-chosen string) is in the line. Server faults keep their ERROR and traceback.
"""

from __future__ import annotations

import logging

#: The logger BentoML's ``log_exception`` writes to.
BENTOML_HTTP_LOGGER = "bentoml._internal.server.http_app"


def client_error_status(exc: BaseException | None) -> int | None:
    """The HTTP status (4xx) BentoML answers ``exc`` with, or ``None`` for a server fault."""
    from bentoml.exceptions import BentoMLException
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return 400
    if isinstance(exc, BentoMLException):
        status = int(exc.error_code)
        return status if 400 <= status < 500 else None
    return None


class RefusedRequestFilter(logging.Filter):
    """Rewrites BentoML's ERROR record of a client error into one INFO line without traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        status = client_error_status(exc)
        if status is None:
            return True
        path, method = (record.args + ("?", "?"))[:2] if isinstance(record.args, tuple) else ("?", "?")
        record.msg, record.args = "refused request on %s [%s]: HTTP %d (%s)", (path, method, status,
                                                                                type(exc).__name__)
        record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
        record.exc_info = record.exc_text = None
        return True


def install_log_filters() -> None:
    """Attach :class:`RefusedRequestFilter` to BentoML's HTTP logger (once per process)."""
    logger = logging.getLogger(BENTOML_HTTP_LOGGER)
    if not any(isinstance(f, RefusedRequestFilter) for f in logger.filters):
        logger.addFilter(RefusedRequestFilter())
