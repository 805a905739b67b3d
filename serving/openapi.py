"""The service's OpenAPI document (``GET /docs.json``), completed where BentoML's
generator falls short of what the service answers:

- a request body is required on every ``POST`` endpoint (BentoML leaves it optional);
- a 400 carries ``detail`` as a list of problems (BentoML declares a string), and the
  401 / 408 / 413 / 415 / 429 / 500 / 503 answers of the middleware and the server are listed;
- ``GET /model`` (a mounted route, which BentoML documents only for FastAPI apps)
  is described with its response schema.

Everything added comes from the pydantic models in :mod:`serving.schemas`, the
models the service answers with. :class:`OpenApiMiddleware` serves the completed
document in place of BentoML's.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel

from serving.schemas import ModelInfo, PlainError, RequestError

#: Where BentoML serves the document (its docs page at ``/`` reads it from there).
DOCS_PATH = "/docs.json"
#: The read-only route the service mounts beside the BentoML endpoints.
MODEL_INFO_PATH = "/model"
_REF = "#/components/schemas/{model}"

#: Refusals every POST endpoint may answer, beside 400, with when they happen.
_REFUSALS = {
    401: "missing or invalid API key (only when keys are configured)",
    408: "request body not received within QORGAN_BODY_TIMEOUT_S",
    413: "request body larger than QORGAN_MAX_BODY_BYTES",
    415: "request body not sent as application/json",
    429: "more than QORGAN_MAX_CONCURRENCY requests in flight; retry after Retry-After seconds",
    500: "server fault (never a client error)",
    503: "not ready yet, or shutting down",
}


def _add_schema(schemas: dict[str, Any], model: type[BaseModel]) -> dict[str, str]:
    """Put ``model`` (and the models it uses) into ``components.schemas``; its reference."""
    schema = model.model_json_schema(ref_template=_REF)
    for name, sub in schema.pop("$defs", {}).items():
        schemas.setdefault(name, sub)
    schemas[model.__name__] = schema
    return {"$ref": _REF.format(model=model.__name__)}


def _json(description: str, ref: dict[str, str]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref}}}


def complete_openapi(spec: dict[str, Any], api_routes: Iterable[str]) -> dict[str, Any]:
    """A copy of BentoML's document with the corrections listed in the module docstring."""
    spec = copy.deepcopy(spec)
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    request_error, plain_error = _add_schema(schemas, RequestError), _add_schema(schemas, PlainError)
    for route in api_routes:
        operation = spec["paths"][route]["post"]
        operation["requestBody"]["required"] = True
        ok = {str(status): answer for status, answer in operation["responses"].items()}["200"]
        operation["responses"] = {
            "200": ok,
            "400": _json("invalid request: what was wrong, never the text", request_error),
            **{str(status): _json(why, plain_error) for status, why in _REFUSALS.items()},
        }
    spec["paths"][MODEL_INFO_PATH] = {"get": {
        "tags": ["Service APIs"],
        "operationId": "qorgan__model",
        "description": (ModelInfo.__doc__ or "").strip(),
        "responses": {"200": _json("Successful Response", _add_schema(schemas, ModelInfo)),
                      "401": _json(_REFUSALS[401], plain_error)},
    }}
    return spec


class OpenApiMiddleware:
    """Answer ``GET /docs.json`` with ``document()`` (built once, on first request)."""

    def __init__(self, app, document: Callable[[], dict[str, Any]]) -> None:
        self.app, self.document = app, document
        self._body: bytes | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("GET", "HEAD") or scope.get("path") != DOCS_PATH:
            await self.app(scope, receive, send)
            return
        if self._body is None:
            self._body = json.dumps(self.document()).encode("utf-8")
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(self._body)).encode())]})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else self._body})
