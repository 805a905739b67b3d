"""The HTTP service in-process (``Service.to_asgi()`` + starlette's TestClient):
every endpoint, every refused request, API keys, the body limit, and that no
message text reaches a log line."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from conftest import TINY_LIMITS
from starlette.testclient import TestClient

from models.bundle import load_bundle
from serving.auth import ApiKeys, InsecureBindError, check_bind, is_loopback

KEYS = ("key-one-for-tests", "key-two-for-tests")
AUTH = {"Authorization": f"Bearer {KEYS[0]}"}
MAX_BODY = 200_000
#: A distinctive, neutral marker; it must never appear in any log line.
MARKER = "zebra-lantern-7731"
MAX_MESSAGES, MAX_TEXT_CHARS = TINY_LIMITS["max_messages"], TINY_LIMITS["max_text_chars"]


@pytest.fixture(scope="module")
def client(tiny_bundle):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QORGAN_BUNDLE", str(tiny_bundle))
        mp.setenv("QORGAN_API_KEYS", ",".join(KEYS))
        mp.setenv("QORGAN_MAX_BODY_BYTES", str(MAX_BODY))
        mp.setenv("QORGAN_INTRA_OP_THREADS", "1")
        from serving.service import Qorgan

        with TestClient(Qorgan.to_asgi()) as c:
            yield c


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return load_bundle(tiny_bundle)


def score(client, body, headers=AUTH):
    return client.post("/score", json=body, headers=headers)


# -- scoring ---------------------------------------------------------------------------


def test_score_returns_scores_flags_priority_per_message(client, bundle):
    body = {"messages": [{"id": "a-1", "text": "see you at the library"},
                         {"id": "b-2", "text": "Сәлем, ертең мектепке барасың ба?"},
                         {"id": "c-3", "text": "Привет, как дела?"}],
            "policy": "triage"}
    r = score(client, body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model"] == bundle.name and out["model_version"] == bundle.version
    assert out["policy"] == "triage"
    assert [m["id"] for m in out["results"]] == ["a-1", "b-2", "c-3"]
    thresholds = dict(zip(bundle.labels, bundle.thresholds("triage"), strict=True))
    for m in out["results"]:
        assert list(m["scores"]) == list(bundle.labels)
        assert all(0.0 <= p <= 1.0 for p in m["scores"].values())
        assert m["flags"] == {lb: m["scores"][lb] >= thresholds[lb] for lb in bundle.labels}
        assert m["priority"] in bundle.priority["levels"]


def test_scores_match_the_scorer(client, tiny_bundle):
    from serving.scorer import Scorer

    texts = ["see you at the library", "ok", "Привет, как дела?"]
    r = score(client, {"messages": texts})
    served = np.array([[m["scores"][lb] for lb in m["scores"]] for m in r.json()["results"]])
    # int8 activations are quantised per batch, so batch-mates move scores a little.
    np.testing.assert_allclose(served, Scorer.from_bundle(tiny_bundle).proba(texts), atol=5e-3)


def test_a_plain_list_of_strings_is_accepted(client):
    r = score(client, ["first note", "second note", "third note"])
    assert r.status_code == 200, r.text
    out = r.json()
    assert [m["id"] for m in out["results"]] == ["0", "1", "2"]
    assert out["policy"] == "moderation"
    r = score(client, {"messages": ["first note", {"id": "x", "text": "second note"}]})
    assert [m["id"] for m in r.json()["results"]] == ["0", "x"]


def test_policies_give_their_own_flags(client, bundle):
    texts = [f"note number {i} about school" for i in range(12)]
    for policy in bundle.policies:
        out = score(client, {"messages": texts, "policy": policy}).json()
        th = dict(zip(bundle.labels, bundle.thresholds(policy), strict=True))
        assert out["policy"] == policy
        for m in out["results"]:
            assert m["flags"] == {lb: m["scores"][lb] >= th[lb] for lb in bundle.labels}


def test_limits_are_inclusive(client):
    assert score(client, {"messages": ["n"] * MAX_MESSAGES}).status_code == 200
    assert score(client, {"messages": ["x" * MAX_TEXT_CHARS]}).status_code == 200


def test_proba_endpoint_is_batchable_and_in_label_order(client, bundle):
    r = client.post("/proba", json={"texts": ["one note", "two notes"]}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert np.array(r.json()).shape == (2, len(bundle.labels))
    from serving.service import Qorgan

    assert Qorgan.apis["proba"].batchable and not Qorgan.apis["score"].batchable


def test_model_info(client, bundle):
    r = client.get("/model", headers=AUTH)
    assert r.status_code == 200
    info = r.json()
    assert info["name"] == bundle.name and info["version"] == bundle.version
    assert info["labels"] == list(bundle.labels)
    assert info["languages"] == list(bundle.languages)
    assert set(info["policies"]) == set(bundle.policies)
    for policy in bundle.policies:
        got = [info["policies"][policy][lb]["threshold"] for lb in bundle.labels]
        np.testing.assert_allclose(got, bundle.thresholds(policy), rtol=1e-6)
    assert info["priority"] == bundle.priority
    assert info["limits"] == bundle.limits == TINY_LIMITS
    assert info["default_policy"] == {"api": "moderation", "batch": "triage"} == bundle.serving["default_policy"]
    assert set(info["metrics"]) == {"macro_pr_auc", "calibration", "served_variant", "int8_recipe", "int8_parity",
                                   "ordinary_text_flag_rate"}
    assert info["metrics"]["served_variant"] == bundle.serving_variant
    assert info["metrics"]["calibration"]["ece_after"] == bundle.metrics["calibration"]["ece_after"]
    assert info["prevalence"] == bundle.prevalence() and all(0 < v < 1 for v in info["prevalence"].values())
    assert info["digest"] == bundle.digest and info["digest"].startswith("sha256:")
    assert score(client, {"messages": ["hello"]}).json()["model_digest"] == bundle.digest
    flagged = info["metrics"]["ordinary_text_flag_rate"]
    assert flagged["flag_rate"] == bundle.metrics["background"]["flag_rate"]
    assert set(flagged["flag_rate"]) == set(bundle.policies)


def test_the_openapi_document_describes_what_the_service_answers(client, bundle):
    """BentoML's generator left the body optional, declared the 400 detail a string, gave
    ``policy`` no enum and omitted GET /model (serving.openapi completes it)."""
    from serving.schemas import ModelInfo, RequestError

    spec = client.get("/docs.json", headers=AUTH).json()
    schemas = spec["components"]["schemas"]
    for path in ("/score", "/proba"):
        post = spec["paths"][path]["post"]
        assert post["requestBody"]["required"] is True
        assert {"200", "400", "401", "413", "415", "429", "500", "503"} <= set(post["responses"])
        ref = post["responses"]["400"]["content"]["application/json"]["schema"]["$ref"]
        assert schemas[ref.rsplit("/", 1)[1]]["properties"]["detail"]["type"] == "array"
    policy = spec["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "properties"]["policy"]
    assert sorted(policy["enum"]) == sorted(bundle.policies) and policy["default"] == "moderation"
    get = spec["paths"]["/model"]["get"]
    assert get["responses"]["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ModelInfo"}
    # …and the answers conform to the documented models.
    ModelInfo.model_validate(client.get("/model", headers=AUTH).json())
    RequestError.model_validate(score(client, {"messages": ["a"], "policy": "lenient"}).json())


# -- health and auth ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/healthz", "/livez", "/readyz"])
def test_health_needs_no_key(client, path):
    assert client.get(path).status_code == 200


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer wrong-key"}, {"Authorization": f"Basic {KEYS[0]}"},
    {"Authorization": "Bearer "}, {"Authorization": KEYS[0]},
], ids=["none", "wrong", "basic", "empty", "no-scheme"])
def test_requests_without_a_valid_key_are_refused(client, headers):
    for r in (score(client, ["hello"], headers), client.get("/model", headers=headers),
              client.post("/proba", json={"texts": ["hello"]}, headers=headers)):
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")


def test_every_configured_key_works_and_preflight_is_exempt(client):
    for key in KEYS:
        assert score(client, ["hello"], {"Authorization": f"bearer {key}"}).status_code == 200
    assert client.options("/score").status_code != 401


def test_api_keys_from_env_and_file(tmp_path):
    keys_file = tmp_path / "keys"
    keys_file.write_text("# a comment\nfile-key\n\n", encoding="utf-8")
    keys = ApiKeys.from_env({"QORGAN_API_KEYS": " env-key , ,", "QORGAN_API_KEYS_FILE": str(keys_file)})
    assert keys.accepts("env-key") and keys.accepts("file-key")
    assert not keys.accepts("env-ke") and not keys.accepts("") and not keys.accepts("# a comment")
    assert not ApiKeys.from_env({}).enabled
    with pytest.raises(ValueError, match="cannot be read"):
        ApiKeys.from_env({"QORGAN_API_KEYS_FILE": str(tmp_path / "missing")})


def test_no_key_means_loopback_only():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("10.0.0.5")
    check_bind(["127.0.0.1", "::1"], ApiKeys())
    check_bind(["0.0.0.0"], ApiKeys.of(["k"]))
    with pytest.raises(InsecureBindError, match="QORGAN_API_KEYS"):
        check_bind(["127.0.0.1", "0.0.0.0"], ApiKeys())


# -- refused requests: a clear 4xx that never echoes the text ------------------------------------------


BAD_BODIES = {
    "empty list": {"messages": []},
    "empty body list": [],
    "too many messages": {"messages": [f"{MARKER} {i}" for i in range(MAX_MESSAGES + 1)]},
    "text too long": {"messages": [MARKER * (MAX_TEXT_CHARS // len(MARKER) + 1)]},
    "empty text": {"messages": [{"id": "1", "text": ""}]},
    "whitespace text": {"messages": [" \n\t ", MARKER]},
    "text not a string": {"messages": [{"id": "1", "text": 42}]},
    "id not a string": {"messages": [{"id": 1, "text": MARKER}]},
    "id missing": {"messages": [{"text": MARKER}]},
    "message not an object": {"messages": [7, MARKER]},
    "messages not a list": {"messages": MARKER},
    "policy not a string": {"messages": [MARKER], "policy": 3},
    "unknown policy": {"messages": [MARKER], "policy": f"{MARKER}-policy"},
    "unknown field": {"messages": [MARKER], "priority": MARKER},
    "unknown message field": {"messages": [{"id": "1", "text": MARKER, "lang": MARKER}]},
    "no messages": {"policy": "triage"},
    # A client-chosen key must reach neither the response nor the log (it could forge a log line).
    "unknown field named by the client": {"messages": ["a note"], f"{MARKER}\n[ERROR] forged line": 1},
    "unknown message key named by the client": {"messages": [{"id": "1", "text": "a note", MARKER: 1}]},
    # Nothing to score: a NUL once scored bullying 0.98.
    "control character only": {"messages": ["\u0000"]},
    "zero-width characters only": {"messages": ["\u200b\u200d\ufeff"]},
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_bad_requests_get_a_400_without_the_text(client, body):
    r = score(client, body)
    assert r.status_code == 400, r.text
    out = r.json()
    assert out["error"] and out["detail"]
    assert MARKER not in r.text and "forged" not in r.text


def test_emoji_only_messages_are_scored(client):
    assert score(client, {"messages": ["😀😀", "👍", "?!"]}).status_code == 200


def test_invalid_json_gets_a_400(client):
    r = client.post("/score", content=f'{{"messages": ["{MARKER}'.encode(),
                    headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 400 and MARKER not in r.text


def test_proba_endpoint_has_the_same_limits(client):
    for body in ({"texts": []}, {"texts": [" "]}, {"texts": ["x" * (MAX_TEXT_CHARS + 1)]},
                 {"texts": ["n"] * (MAX_MESSAGES + 1)}, {"texts": ["a"], "extra": 1},
                 {"texts": ["\u0000"]}, {"texts": ["a"], MARKER: 1}):
        r = client.post("/proba", json=body, headers=AUTH)
        assert r.status_code == 400, body
        assert MARKER not in r.text


@pytest.mark.parametrize("content_type", [
    "multipart/form-data",  # no boundary: BentoML answered 500
    "multipart/form-data; boundary=x",
    "text/plain",  # a CORS-simple type: a web page could post it without a preflight
    "application/x-www-form-urlencoded",
    None,
])
@pytest.mark.parametrize("path", ["/score", "/proba"])
def test_bodies_not_declared_json_get_a_415(client, path, content_type):
    body = json.dumps({"messages": [MARKER]} if path == "/score" else {"texts": [MARKER]}).encode()
    headers = {**AUTH, **({"content-type": content_type} if content_type else {})}
    r = client.post(path, content=body, headers=headers)
    assert r.status_code == 415, r.text
    assert "application/json" in r.json()["error"] and MARKER not in r.text
    ok = client.post(path, content=body, headers={**AUTH, "content-type": "Application/JSON; charset=utf-8"})
    assert ok.status_code == 200


def test_bodies_over_the_limit_get_a_413(client):
    big = json.dumps({"messages": [MARKER * 10] * 2000}).encode()
    assert len(big) > MAX_BODY
    r = client.post("/score", content=big, headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 413 and MARKER not in r.text

    def chunks():  # no Content-Length: the limit is counted while reading
        for i in range(0, len(big), 16384):
            yield big[i : i + 16384]

    r = client.post("/score", content=chunks(), headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 413


def test_no_message_text_in_any_log_line(client, caplog, capsys):
    bentoml_logger = logging.getLogger("bentoml")
    bentoml_logger.addHandler(caplog.handler)  # bentoml's loggers may not propagate to root
    try:
        with caplog.at_level(logging.DEBUG):
            assert score(client, {"messages": [f"{MARKER} valid"]}).status_code == 200
            for body in BAD_BODIES.values():
                assert score(client, body).status_code == 400
            client.post("/score", content=f'{{"messages": ["{MARKER}'.encode(),
                        headers={**AUTH, "content-type": "application/json"})
            score(client, [MARKER], headers={})  # unauthenticated
    finally:
        bentoml_logger.removeHandler(caplog.handler)
    captured = capsys.readouterr()
    # The capture works: refused requests were logged, one INFO line each, no traceback.
    refused = [r for r in caplog.records if r.getMessage().startswith("refused request on /score [POST]: HTTP 400")]
    assert len(refused) >= len(BAD_BODIES) and {r.levelno for r in refused} == {logging.INFO}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "Traceback" not in caplog.text and "Exception on" not in caplog.text
    assert MARKER not in caplog.text
    assert MARKER not in captured.out and MARKER not in captured.err


def test_adaptive_batching_switch():
    from serving.settings import ServiceSettings

    assert ServiceSettings.from_env({}).adaptive_batching is False
    assert ServiceSettings.from_env({"QORGAN_ADAPTIVE_BATCHING": "1"}).adaptive_batching is True
    with pytest.raises(ValueError, match="QORGAN_ADAPTIVE_BATCHING must be 0 or 1"):
        ServiceSettings.from_env({"QORGAN_ADAPTIVE_BATCHING": "maybe"})


def test_only_client_errors_lose_their_traceback():
    from pydantic import BaseModel, ValidationError

    from serving.logs import RefusedRequestFilter

    class M(BaseModel):
        n: int

    def record(exc):
        return logging.LogRecord("bentoml._internal.server.http_app", logging.ERROR, __file__, 1,
                                 "Exception on %s [%s]", ("/score", "POST"), (type(exc), exc, None))

    try:
        M(n=MARKER)
    except ValidationError as exc:
        refused = record(exc)
    assert RefusedRequestFilter().filter(refused)
    assert refused.levelno == logging.INFO and refused.exc_info is None
    assert refused.getMessage() == "refused request on /score [POST]: HTTP 400 (ValidationError)"
    fault = record(RuntimeError("boom"))
    assert RefusedRequestFilter().filter(fault)
    assert fault.levelno == logging.ERROR and fault.exc_info is not None


def test_the_concurrency_limit_counts_admitted_requests_and_answers_429_beyond_it():
    """serving.admission, in process: with 2 requests held inside the app a third gets an
    immediate 429 with Retry-After; probes and the service's own hop are never refused."""
    import asyncio

    from serving.admission import ConcurrencyLimitMiddleware
    from serving.auth import INTERNAL_TOKEN

    async def main():
        release = asyncio.Event()

        async def app(scope, receive, send):
            await release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        limited = ConcurrencyLimitMiddleware(app, limit=2)

        async def call(path="/score", headers=()):
            sent = []

            async def send(message):
                sent.append(message)

            async def receive():
                return {"type": "http.request", "body": b"", "more_body": False}

            await limited({"type": "http", "path": path, "method": "POST", "headers": list(headers)}, receive, send)
            return sent[0]["status"], dict(sent[0]["headers"])

        held = [asyncio.ensure_future(call()) for _ in range(2)]
        await asyncio.sleep(0.01)
        refused = await call()
        probe = asyncio.ensure_future(call("/readyz"))
        hop = asyncio.ensure_future(call("/proba", [(b"authorization", f"Bearer {INTERNAL_TOKEN}".encode())]))
        await asyncio.sleep(0.01)
        in_flight = limited.in_flight
        release.set()
        done = await asyncio.gather(*held, probe, hop)
        return refused, in_flight, done, limited.in_flight

    refused, in_flight, done, after = asyncio.run(main())
    assert refused[0] == 429 and refused[1][b"retry-after"] == b"1"
    assert in_flight == 2 and [s for s, _ in done] == [200] * 4 and after == 0
