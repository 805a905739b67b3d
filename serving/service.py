"""The BentoML HTTP service: ``bentoml serve serving.service:Qorgan``.

Endpoints (all JSON):

- ``POST /score`` — ``{"messages": [{"id", "text"}, …], "policy": "moderation"}``
  (or a bare list of strings) → per message its id, calibrated scores, flags
  and triage priority, with the model name, version and policy.
- ``POST /proba`` — ``{"texts": [...]}`` → calibrated probabilities in label
  order. It is the batchable method: with ``QORGAN_ADAPTIVE_BATCHING=1``
  concurrent ``/score`` requests reach it through BentoML's in-process proxy,
  and adaptive batching merges them into one model call. Off by default: under
  load on 2 cores the proxy hop dropped connections (HTTP 500, see
  benchmarks/README.md); ``/score`` then merges concurrent requests itself
  (:mod:`serving.microbatch`), without the hop.
- ``GET /model`` — name, version, labels, languages, policies with thresholds,
  priority rules, limits and a metrics summary of the loaded bundle.
- ``GET /healthz`` ``/livez`` ``/readyz`` ``/metrics`` — BentoML's probes and
  Prometheus metrics (``/metrics`` answers under ``bentoml serve``).

The bundle comes from ``QORGAN_BUNDLE`` (default ``models/default``); see
:mod:`serving.settings` and :mod:`serving.auth` for every other variable.
No message text is ever logged.
"""

from __future__ import annotations

import logging
from typing import Any

import bentoml
import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from models.bundle import Bundle, BundleError, load_bundle
from serving.admission import ConcurrencyLimitMiddleware
from serving.auth import (
    INTERNAL_TOKEN,
    ApiKeyMiddleware,
    ApiKeys,
    BodySizeLimitMiddleware,
    InsecureBindError,
    JsonBodyMiddleware,
    check_bind,
    listening_hosts,
    serve_command_host,
)
from serving.logs import install_log_filters
from serving.metrics import service_metrics
from serving.microbatch import MicroBatcher
from serving.openapi import MODEL_INFO_PATH, OpenApiMiddleware, complete_openapi
from serving.schemas import MessageScore, ModelInfo, ScoreResponse, request_models
from serving.scorer import Scorer, ScorerConfig
from serving.settings import ServiceSettings
from serving.shutdown import GracefulShutdownMiddleware

# A child of the "bentoml" logger, so that `bentoml serve` shows its lines.
logger = logging.getLogger("bentoml.qorgan")
# A refused request is one INFO line, not an ERROR with a traceback (serving.logs).
install_log_filters()


def _served_bundle() -> Bundle:
    """The bundle, verified when this module is imported: `bentoml serve` imports it before
    it starts any worker, so a missing or tampered bundle stops the server once, with its
    reason, instead of workers that fail and are restarted forever."""
    try:
        return load_bundle(ServiceSettings.from_env().bundle)
    except BundleError as exc:
        raise SystemExit(f"qorgan: cannot serve: {exc}") from None


# The endpoints' request schemas come from the bundle's manifest (limits, policies,
# default policy), read here because BentoML needs them when the class is defined.
_SERVING = _served_bundle()
_REQUESTS = request_models(_SERVING.limits, _SERVING.policies, _SERVING.default_policy("api"))
Message = _REQUESTS.Message

#: Adaptive batching: the most texts merged into one model call, and the longest
#: a request may wait in the batching queue (the dispatcher answers 503 beyond it).
MAX_BATCH_TEXTS = 4 * _SERVING.limits["max_messages"]
MAX_LATENCY_MS = 30_000


async def _model_info(_: Request) -> JSONResponse:
    return JSONResponse(bentoml.get_current_service().model_info())


@bentoml.service(
    name="qorgan",
    workers=ServiceSettings.from_env().workers,
    # No BentoML max_concurrency: it counts requests whose body has not arrived, so idle
    # sockets could take every slot; serving.admission limits after the body is read.
    traffic={"timeout": 60},
)
class Qorgan:
    """Scores children's messages for bullying, threats, self-harm risk and bullying disclosures."""

    def __init__(self) -> None:
        settings = ServiceSettings.from_env()
        # The command-line check (below) covers `bentoml serve`; this one covers any
        # other way of starting a worker, by looking at the socket it really listens on.
        check_bind(listening_hosts(), ApiKeys.from_env())
        self.scorer = Scorer(_SERVING, ScorerConfig(workers=settings.workers,
                                                    intra_op_threads=settings.intra_op_threads))
        self.scorer.proba(["warm-up"])  # fail now, not on the first request, if the graph cannot run
        self._metrics = service_metrics()
        self._metrics.model_info.labels(name=self.scorer.name, version=self.scorer.version).set(1)
        self._proxy_ready = False
        self._adaptive_batching = settings.adaptive_batching
        self._batcher = MicroBatcher(self.scorer.proba, max_messages=settings.batch_max_messages,
                                     max_wait_ms=settings.batch_wait_ms, observe=self._metrics.call_messages.observe)
        logger.info("loaded model %s %s from %s (%d intra-op threads)", self.scorer.name,
                    self.scorer.version, settings.bundle, self.scorer.config.threads)

    @bentoml.on_deployment
    def refuse_insecure_bind() -> None:
        """Stop ``bentoml serve --host <public>`` before it binds, when no API key is set."""
        host = serve_command_host()
        if host is not None:
            try:
                check_bind([host], ApiKeys.from_env())
            except InsecureBindError as exc:
                raise SystemExit(f"qorgan: {exc}") from None

    def __is_ready__(self) -> bool:
        return getattr(self, "scorer", None) is not None

    # -- endpoints ---------------------------------------------------------------

    @bentoml.api(route="/score", input_spec=_REQUESTS.ScoreRequest)
    async def score(self, messages: list[Message], policy: str) -> ScoreResponse:
        """Score messages under a policy: calibrated scores, flags and triage priority per message."""
        proba = await self._proba([m.text for m in messages])
        scores = self.scorer.scores_from_proba(proba, policy)
        self._metrics.record(policy, self.scorer.labels,
                             [sum(s.flags[lb] for s in scores) for lb in self.scorer.labels],
                             [s.priority for s in scores])
        return ScoreResponse(
            model=self.scorer.name, model_version=self.scorer.version, model_digest=self.scorer.bundle.digest,
            policy=policy,
            results=[MessageScore(id=m.id, scores=s.scores, flags=s.flags, priority=s.priority)
                     for m, s in zip(messages, scores, strict=True)])

    @bentoml.api(route="/proba", input_spec=_REQUESTS.ProbaRequest, batchable=True,
                 max_batch_size=MAX_BATCH_TEXTS, max_latency_ms=MAX_LATENCY_MS)
    def proba(self, texts: list[str]) -> list[list[float]]:
        """Calibrated probabilities per text, in the label order of ``GET /model``."""
        return self.scorer.proba(texts).tolist()

    # -- helpers -------------------------------------------------------------------

    async def _proba(self, texts: list[str]) -> np.ndarray:
        """Probabilities, so that concurrent requests share a model call: through the
        in-process micro-batcher, or with ``QORGAN_ADAPTIVE_BATCHING=1`` through the
        batchable endpoint and BentoML's adaptive batching."""
        client = getattr(self, "to_async", None) if self._adaptive_batching else None
        if client is None:  # BentoML's batching off, or not running under a BentoML server
            return await self._batcher(texts)
        if not self._proxy_ready:
            # The hop goes back through the ASGI app and so through the API-key check.
            # BentoML's proxy client builds every session from this dict.
            client.default_headers["Authorization"] = f"Bearer {INTERNAL_TOKEN}"
            self._proxy_ready = True
        return np.asarray(await client.proba(texts=texts), dtype=np.float32)

    def model_info(self) -> dict[str, Any]:
        """What ``GET /model`` answers (:class:`serving.schemas.ModelInfo`): the loaded
        bundle's identity and digest, policies, limits and quality."""
        bundle = self.scorer.bundle
        manifest = bundle.manifest
        return ModelInfo(
            name=bundle.name,
            version=bundle.version,
            digest=bundle.digest,
            created=manifest.get("created"),
            git_commit=manifest.get("git_commit"),
            labels=list(bundle.labels),
            languages=list(bundle.languages),
            policies={policy: {lb: per_label[lb] for lb in bundle.labels}
                      for policy, per_label in bundle.calibration["policies"].items()},
            default_policy=bundle.serving["default_policy"],
            priority=bundle.priority,
            calibration_method=manifest.get("calibration_method"),
            prevalence=bundle.prevalence(),
            max_length_tokens=bundle.max_length,
            limits=bundle.limits,
            metrics=bundle.metrics_summary(),
        ).model_dump()


# Outermost first: refuse new requests while shutting down, reject a missing key, then a
# body that is not JSON, before reading any body; read the body (bounded in size and
# time); then admit at most QORGAN_MAX_CONCURRENCY requests.
Qorgan.add_asgi_middleware(GracefulShutdownMiddleware)
Qorgan.add_asgi_middleware(ApiKeyMiddleware)
Qorgan.add_asgi_middleware(OpenApiMiddleware, document=lambda: complete_openapi(
    Qorgan.openapi_spec.asdict(), [api.route for api in Qorgan.apis.values()]))
Qorgan.add_asgi_middleware(JsonBodyMiddleware)
Qorgan.add_asgi_middleware(BodySizeLimitMiddleware)
Qorgan.add_asgi_middleware(ConcurrencyLimitMiddleware)
Qorgan.mount_asgi_app(Starlette(routes=[Route(MODEL_INFO_PATH, _model_info, methods=["GET"])]), path="/")
