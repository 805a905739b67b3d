"""``bentoml serve serving.service:Qorgan`` in a real subprocess: scoring through
``bentoml.SyncHTTPClient``, Prometheus metrics, adaptive batching, logs free of
message text, and the refusal to listen publicly without an API key."""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENTOML = str(Path(sys.executable).parent / "bentoml")
MARKER = "otter-compass-4419"
START_TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(tiny_bundle: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QORGAN_", "BENTOML_"))}
    env.update(QORGAN_BUNDLE=str(tiny_bundle), QORGAN_INTRA_OP_THREADS="1", QORGAN_ADAPTIVE_BATCHING="1", BENTOML_DO_NOT_TRACK="True")
    return env


def get(url: str, timeout: float = 5) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def post(url: str, body, timeout: float = 30) -> tuple[int, str]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group (it started its own), SIGKILL if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def launch(bundle: Path, log_path: Path, **env: str) -> tuple[subprocess.Popen, str]:
    """`bentoml serve` on a free loopback port, once `/readyz` answers 200."""
    port = free_port()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [BENTOML, "serve", "serving.service:Qorgan", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env={**server_env(bundle), **env}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log_path.read_text(errors='replace')}")
        try:
            if get(f"{url}/readyz", timeout=2)[0] == 200:
                return proc, url
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop(proc)
            pytest.fail(f"server not ready after {START_TIMEOUT_S} s:\n{log_path.read_text(errors='replace')}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def server(tiny_bundle, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("served") / "server.log"
    proc, url = launch(tiny_bundle, log_path)
    try:
        yield url, log_path
    finally:
        stop(proc)


def test_scores_through_the_bentoml_client(server, tiny_bundle):
    import bentoml

    from models.bundle import load_bundle

    url, _ = server
    bundle = load_bundle(tiny_bundle)
    with bentoml.SyncHTTPClient(url, server_ready_timeout=30) as client:
        out = client.score(messages=[{"id": "m1", "text": f"{MARKER} see you after class"},
                                     {"id": "m2", "text": "Сәлем, қалың қалай?"}], policy="triage")
        assert out["model"] == bundle.name and out["model_version"] == bundle.version
        assert [m["id"] for m in out["results"]] == ["m1", "m2"]
        assert all(list(m["scores"]) == list(bundle.labels) for m in out["results"])
        out = client.score(messages=["first note", "second note"])
        assert [m["id"] for m in out["results"]] == ["0", "1"] and out["policy"] == "moderation"
        assert len(client.proba(texts=["one", "two", "three"])) == 3


def test_health_model_and_refusals(server):
    url, _ = server
    for path in ("/healthz", "/livez", "/readyz"):
        assert get(url + path)[0] == 200
    status, body = get(url + "/model")
    assert status == 200 and json.loads(body)["labels"]
    status, body = post(url + "/score", {"messages": [f"{MARKER} x" * 2000]})
    assert status == 400 and MARKER not in body


def test_concurrent_requests_are_batched_and_counted(server, tiny_bundle):
    from models.bundle import load_bundle

    url, _ = server
    bundle = load_bundle(tiny_bundle)

    def one(i: int) -> int:
        return post(url + "/score", {"messages": [f"note {i} {j}" for j in range(8)], "policy": "triage"})[0]

    def batch_histogram() -> tuple[float, float]:
        lines = get(url + "/metrics")[1].splitlines()
        value = {k: sum(float(line.rsplit(" ", 1)[1]) for line in lines
                        if line.startswith(f"bentoml_service_adaptive_batch_size_{k}{{") and 'method_name="proba"' in line)
                 for k in ("sum", "count")}
        return value["sum"], value["count"]

    # BentoML's dispatcher first calibrates on a few dozen single calls; then a burst
    # of concurrent requests is merged: more requests than model calls.
    merged = False
    with cf.ThreadPoolExecutor(12) as pool:
        for _ in range(6):
            assert set(pool.map(one, range(48))) == {200}
            requests, calls = batch_histogram()
            if requests > calls:
                merged = True
                break
    assert merged, f"no request was merged: {requests} requests in {calls} calls"

    metrics = get(url + "/metrics")[1]
    assert f'qorgan_model_info{{name="{bundle.name}",version="{bundle.version}"}} 1.0' in metrics
    assert 'qorgan_messages_scored_total{policy="triage"}' in metrics
    assert "qorgan_priority_total{" in metrics
    flagged = [line for line in metrics.splitlines() if line.startswith("qorgan_flags_total{")]
    assert flagged and all(any(f'label="{lb}"' in line for lb in bundle.labels) for line in flagged)


def test_server_log_has_no_message_text(server):
    _, log_path = server
    post(server[0] + "/score", {"messages": [f"{MARKER} hello"], "policy": f"{MARKER}"})
    time.sleep(0.5)
    log = log_path.read_text(errors="replace")
    assert "loaded model" in log and "/score" in log
    assert MARKER not in log
    # A refused request is one INFO line; tracebacks are for server faults (serving.logs).
    assert "refused request on /score [POST]: HTTP 400 (ValidationError)" in log
    assert "Traceback" not in log


def refused_start(bundle: Path, host: str) -> bytes:
    """The output of a `bentoml serve` that must exit by itself, non-zero, within a minute."""
    proc = subprocess.Popen(
        [BENTOML, "serve", "serving.service:Qorgan", "--host", host, "--port", str(free_port())],
        cwd=ROOT, env=server_env(bundle), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        stop(proc)
    assert proc.returncode != 0
    return out


def test_refuses_a_public_address_without_an_api_key(tiny_bundle):
    assert b"refusing to serve on 0.0.0.0 without an API key" in refused_start(tiny_bundle, "0.0.0.0")


def test_a_tampered_bundle_stops_the_server_once_with_its_reason(tiny_bundle, tmp_path):
    """Workers that fail to load are restarted forever; the check at import stops
    `bentoml serve` before any worker starts."""
    import shutil

    from models.bundle import CALIBRATION_FILE

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    cal = json.loads((bundle / CALIBRATION_FILE).read_text())
    cal["policies"]["triage"]["self_harm"]["threshold"] = 0.99
    (bundle / CALIBRATION_FILE).write_text(json.dumps(cal))
    out = refused_start(bundle, "127.0.0.1")
    assert out.count(b"calibration.json does not match its sha256") == 1, out.decode(errors="replace")[-2000:]


#: Cases per operation and generation mode here; `make harden` runs 500 (benchmarks/hardening).
FAST_FUZZ_EXAMPLES = 40


def test_fuzzing_from_the_openapi_document_finds_no_5xx_mismatch_or_echo(server):
    """schemathesis, positive and negative cases for every documented operation: no 5xx,
    answers that conform to the document, no sent string in a refusal or in the log."""
    from benchmarks.hardening.fuzz import fuzz, leaked_into

    url, log_path = server
    report = fuzz(url, {}, FAST_FUZZ_EXAMPLES)
    assert report.cases >= 100 and report.per_status.get("400", 0) > 0
    assert report.server_errors == 0 and report.failures == [], report.failures
    assert report.sent, "the fuzzer sent no string long enough to look for"
    time.sleep(0.5)
    assert leaked_into(log_path.read_text(errors="replace"), report.sent) == []


def _open_request(url: str, body: bytes) -> socket.socket:
    """A /score request whose body is held back after its first bytes: in flight
    (headers read, handler running) until :func:`_finish_request` sends the rest."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body) + body[:4])
    return sock


def _finish_request(sock: socket.socket, body: bytes) -> int:
    sock.sendall(body[4:])
    head = sock.recv(65536).split(b"\r\n", 1)[0]
    sock.close()
    return int(head.split()[1])


def test_sigterm_finishes_running_requests_refuses_new_ones_and_exits(tiny_bundle, tmp_path):
    """SIGTERM to `bentoml serve` (what Kubernetes sends): a request in flight completes,
    new requests and /readyz get 503 at once, /livez stays 200, the server then exits."""
    proc, url = launch(tiny_bundle, tmp_path / "server.log", QORGAN_SHUTDOWN_GRACE_S="20")
    try:
        body = json.dumps({"messages": [f"{MARKER} see you at practice"]}).encode()
        sock = _open_request(url, body)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert proc.poll() is None, "the server left before its running request finished"
        status, text = post(url + "/score", {"messages": ["hello"]}, timeout=5)
        assert status == 503 and "shutting down" in text
        assert get(url + "/readyz")[0] == 503
        assert get(url + "/livez")[0] == 200
        assert _finish_request(sock, body) == 200
        proc.wait(timeout=10)
    finally:
        stop(proc)
    assert MARKER not in (tmp_path / "server.log").read_text(errors="replace")


def test_sigterm_cancels_requests_still_running_after_the_grace_period(tiny_bundle, tmp_path):
    """A request that never finishes (its body never arrives) cannot hold the server past
    QORGAN_SHUTDOWN_GRACE_S."""
    grace = 3
    proc, url = launch(tiny_bundle, tmp_path / "server.log", QORGAN_SHUTDOWN_GRACE_S=str(grace))
    try:
        sock = _open_request(url, b'{"messages": ["never sent"]}')
        time.sleep(0.5)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=grace + 15)
        took = time.monotonic() - t0
        sock.close()
    finally:
        stop(proc)
    assert grace <= took < grace + 15
    assert "grace period of 3 s over: cancelling 1 running request(s)" in (tmp_path / "server.log").read_text()


def test_without_bentoml_batching_concurrent_requests_share_model_calls(tiny_bundle, tmp_path):
    """The in-process micro-batcher (serving.microbatch), the default path: every message
    goes through it, and concurrent requests are scored in fewer model calls."""
    proc, url = launch(tiny_bundle, tmp_path / "server.log", QORGAN_ADAPTIVE_BATCHING="0")

    def one(i: int) -> int:
        return post(url + "/score", {"messages": [f"note {i} {j}" for j in range(8)]})[0]

    def histogram() -> dict[str, float]:
        lines = get(url + "/metrics")[1].splitlines()
        return {k: sum(float(line.rsplit(" ", 1)[1]) for line in lines
                       if line.startswith(f"qorgan_model_call_messages_{k}")) for k in ("sum", "count")}

    try:
        sent = 0
        with cf.ThreadPoolExecutor(16) as pool:
            for _ in range(6):
                assert set(pool.map(one, range(64))) == {200}
                sent += 64
                calls = histogram()
                if calls["count"] < sent:
                    break
        assert calls["sum"] == 8 * sent, calls
        assert calls["count"] < sent, f"no request shared a model call: {sent} requests, {calls}"
    finally:
        stop(proc)


def test_slow_clients_do_not_block_other_requests(tiny_bundle, tmp_path):
    """Slowloris: 100 connections that send their headers and then nothing of their
    bodies must not keep other clients from being scored: they do not count against
    the in-flight limit (BentoML's max_concurrency did, and answered 429 to everyone),
    and after QORGAN_BODY_TIMEOUT_S they get 408."""
    proc, url = launch(tiny_bundle, tmp_path / "server.log", QORGAN_BODY_TIMEOUT_S="6")
    held = []
    try:
        body = json.dumps({"messages": ["held back"]}).encode()
        held = [_open_request(url, body) for _ in range(100)]
        t_held = time.monotonic()
        time.sleep(1.0)
        answers = []
        for i in range(20):
            t0 = time.monotonic()
            status, _ = post(url + "/score", {"messages": [f"hello {i}"]}, timeout=10)
            answers.append((status, time.monotonic() - t0))
        assert [s for s, _ in answers] == [200] * 20, answers
        assert max(t for _, t in answers) < 2.0, answers
        # QORGAN_BODY_TIMEOUT_S later, a body still missing gets 408 and its connection closes.
        held[0].settimeout(15)
        head = held[0].recv(65536).split(b"\r\n", 1)[0]
        assert head.split()[1] == b"408" and 5 < time.monotonic() - t_held < 15, head
    finally:
        for sock in held:
            sock.close()
        stop(proc)
