"""Tests for the reference receiver, over real loopback HTTP (uvicorn in a thread + requests)."""

from __future__ import annotations

import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from devkit.receiver import DATA_PATH, MAX_BATCH_SIZE, ReceiverServer, create_app

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 5


# --------------------------------------------------------------------------------------------
# helpers and fixtures
# --------------------------------------------------------------------------------------------


def rec(n: int = 1, **overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "service_id": "svc-1",
        "request_id": f"req-{n}",
        "opening_date": "2025-05-14T12:34:56Z",
        "status_id": 1,
        "last_modified_date": f"2025-05-14T12:{n % 60:02d}:00Z",
    }
    record.update(overrides)
    return record


def batch(*records: dict[str, Any]) -> dict[str, Any]:
    return {"requests": list(records) if records else [rec(1), rec(2), rec(3)]}


def post(url: str, body: Any, key: str | None = "key-1", **kwargs: Any) -> requests.Response:
    headers = dict(kwargs.pop("headers", {}))
    if key is not None:
        headers["Idempotency-Key"] = key
    timeout = kwargs.pop("timeout", TIMEOUT)
    if "data" not in kwargs:
        kwargs["json"] = body
    return requests.post(f"{url}{DATA_PATH}", headers=headers, timeout=timeout, **kwargs)


def get(url: str, path: str) -> Any:
    response = requests.get(f"{url}{path}", timeout=TIMEOUT)
    response.raise_for_status()
    return response.json()


def stats(url: str) -> dict[str, int]:
    return get(url, "/inspect/stats")


def add_faults(url: str, *faults: dict[str, Any]) -> None:
    response = requests.post(f"{url}/faults", json={"faults": list(faults)}, timeout=TIMEOUT)
    assert response.status_code == 200, response.text


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def server() -> Iterator[ReceiverServer]:
    with ReceiverServer() as srv:
        yield srv


@pytest.fixture
def url(server: ReceiverServer) -> str:
    requests.delete(f"{server.url}/inspect", timeout=TIMEOUT).raise_for_status()
    return server.url


@pytest.fixture(scope="module", params=["h11", "httptools"])
def proto_server(request: pytest.FixtureRequest) -> Iterator[ReceiverServer]:
    with ReceiverServer(http=request.param) as srv:
        yield srv


@pytest.fixture
def proto_url(proto_server: ReceiverServer) -> str:
    requests.delete(f"{proto_server.url}/inspect", timeout=TIMEOUT).raise_for_status()
    return proto_server.url


# --------------------------------------------------------------------------------------------
# happy path, dedup, idempotency key
# --------------------------------------------------------------------------------------------


def test_healthz(url: str) -> None:
    assert get(url, "/healthz") == {"ok": True}


def test_valid_batch_is_accepted_and_inspectable(url: str) -> None:
    body = batch()
    response = post(url, body, key="k-valid")
    assert response.status_code == 200
    assert response.json() == {"accepted": 3, "duplicate": False, "idempotency_key": "k-valid"}

    (stored,) = get(url, "/inspect/batches")
    assert stored["idempotency_key"] == "k-valid"
    assert stored["count"] == 3
    assert stored["requests"] == body["requests"]
    assert len(stored["body_sha256"]) == 64
    assert stored["received_at"].endswith("Z")
    (light,) = get(url, "/inspect/batches?include_requests=false")
    assert "requests" not in light
    assert light["count"] == 3

    assert get(url, "/inspect/requests") == [
        {**r, "idempotency_key": "k-valid"} for r in body["requests"]
    ]
    assert stats(url) == {
        "batches": 1,
        "records": 3,
        "duplicates": 0,
        "rejected": 0,
        "faults_served": 0,
    }


def test_charset_parameter_is_accepted(url: str) -> None:
    response = post(
        url,
        None,
        key="k-charset",
        data=json.dumps(batch()).encode(),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 200, response.text


def test_same_key_same_body_is_a_duplicate_stored_once(url: str) -> None:
    body = batch()
    first = post(url, body, key="k-dup")
    second = post(url, body, key="k-dup")
    assert first.json() == {"accepted": 3, "duplicate": False, "idempotency_key": "k-dup"}
    assert second.status_code == 200
    assert second.json() == {"accepted": 3, "duplicate": True, "idempotency_key": "k-dup"}
    s = stats(url)
    assert (s["batches"], s["records"], s["duplicates"]) == (1, 3, 1)
    assert len(get(url, "/inspect/requests")) == 3


def test_same_key_different_body_is_422(url: str) -> None:
    assert post(url, batch(rec(1)), key="k-reuse").status_code == 200
    response = post(url, batch(rec(1, status_id=2)), key="k-reuse")
    assert response.status_code == 422
    assert response.json() == {"error": "idempotency key reused with a different body"}
    s = stats(url)
    assert (s["batches"], s["records"], s["duplicates"], s["rejected"]) == (1, 1, 0, 1)
    assert get(url, "/inspect/state")[0]["status_id"] == 1


@pytest.mark.parametrize("key", [None, "", "k" * 300])
def test_missing_idempotency_key_is_400(url: str, key: str | None) -> None:
    response = post(url, batch(), key=key)
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["reason"]
    assert stats(url)["batches"] == 0


# --------------------------------------------------------------------------------------------
# strict validation
# --------------------------------------------------------------------------------------------


def _without(record: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != name}


BAD_BODIES = [
    pytest.param(batch(rec(1), rec(2, status_id=True)), "requests[1].status_id", id="bool-status"),
    pytest.param(batch(rec(1), rec(2, status_id=1.0)), "requests[1].status_id", id="float-status"),
    pytest.param(batch(rec(1), rec(2, status_id="1")), "requests[1].status_id", id="str-status"),
    pytest.param(
        batch(rec(1, opening_date="2025-05-14 12:34:56")),
        "requests[0].opening_date: Input should be a UTC timestamp",
        id="date-with-space",
    ),
    pytest.param(
        batch(rec(1, opening_date="2025-05-14T12:34:56+00:00")),
        "requests[0].opening_date",
        id="date-with-offset",
    ),
    pytest.param(
        batch(rec(1, last_modified_date="2025-05-14T12:34:56.123Z")),
        "requests[0].last_modified_date",
        id="date-with-fraction",
    ),
    pytest.param(
        batch(rec(1, last_modified_date="2025-02-30T00:00:00Z")),
        "requests[0].last_modified_date: Input should be a real calendar date",
        id="date-not-real",
    ),
    pytest.param(
        batch(rec(1, opening_date="2025-05-14T12:34:56Z\n")),
        "requests[0].opening_date",
        id="date-trailing-newline",
    ),
    pytest.param(
        batch(rec(1, opening_date="\uff12\uff10\uff12\uff15-05-14T12:34:56Z")),
        "requests[0].opening_date",
        id="date-unicode-digits",
    ),
    pytest.param(
        batch(rec(1), rec(2), _without(rec(3), "request_id")),
        "requests[2].request_id: Field required",
        id="missing-field",
    ),
    pytest.param(
        batch(rec(1, extra="x")), "requests[0].extra: Extra inputs are not permitted", id="extra"
    ),
    pytest.param({"requests": []}, "requests: empty batch", id="empty-list"),
    pytest.param(batch(rec(1, service_id=None)), "requests[0].service_id", id="null-id"),
    pytest.param(batch(rec(1, request_id="")), "requests[0].request_id", id="empty-id"),
    pytest.param(batch(rec(1, request_id=7)), "requests[0].request_id", id="int-id"),
    pytest.param({"requests": [rec(1)], "more": 1}, "more: Extra inputs", id="top-level-extra"),
    pytest.param({}, "requests: Field required", id="no-requests-key"),
    pytest.param({"requests": rec(1)}, "requests:", id="requests-not-a-list"),
    pytest.param([rec(1)], "body: Input should be an object", id="top-level-list"),
    pytest.param({"requests": [1]}, "requests[0]:", id="item-not-an-object"),
]


@pytest.mark.parametrize(("body", "expected"), BAD_BODIES)
def test_bad_bodies_are_400_with_a_reason_naming_the_field(
    url: str, body: Any, expected: str
) -> None:
    response = post(url, body, key="k-bad")
    assert response.status_code == 400, response.text
    payload = response.json()
    assert payload["error"] == "invalid body"
    assert expected in payload["reason"]
    s = stats(url)
    assert (s["batches"], s["rejected"]) == (0, 1)
    # Nothing was reserved: the key is still usable with a valid body.
    assert post(url, batch(), key="k-bad").status_code == 200


def test_invalid_json_is_400(url: str) -> None:
    response = post(url, None, data=b'{"requests": [', headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["reason"].startswith("body: Invalid JSON")


def test_too_many_records_is_400(url: str) -> None:
    body = batch(*[rec(i) for i in range(MAX_BATCH_SIZE + 1)])
    response = post(url, body)
    assert response.status_code == 400
    assert response.json()["reason"].startswith("requests: List should have at most 10000")
    assert post(url, batch(*body["requests"][:MAX_BATCH_SIZE])).json()["accepted"] == 10_000


def test_form_encoded_body_is_415_with_a_hint(url: str) -> None:
    # The classic mistake: a dict passed as data= is sent form-encoded.
    response = post(url, None, data={"requests": json.dumps([rec(1)])})
    assert response.status_code == 415
    assert "application/x-www-form-urlencoded" in response.json()["reason"]
    assert "json=" in response.json()["reason"]
    # A JSON string passed as data= goes without any Content-Type.
    response = post(url, None, data=json.dumps(batch()))
    assert response.status_code == 415
    assert "Content-Type" in response.json()["reason"]
    response = post(url, None, data=json.dumps(batch()), headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    s = stats(url)
    assert (s["batches"], s["rejected"]) == (0, 3)


# --------------------------------------------------------------------------------------------
# auth and logging
# --------------------------------------------------------------------------------------------


def test_bearer_auth() -> None:
    with ReceiverServer(token="s3cret") as srv:
        missing = post(srv.url, batch())
        assert missing.status_code == 401
        assert missing.headers["WWW-Authenticate"] == "Bearer"
        wrong = post(srv.url, batch(), headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = post(srv.url, batch(), headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        # Inspection stays open.
        assert stats(srv.url)["rejected"] == 2


def test_log_lines_name_key_and_status_but_not_token_or_payload(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="devkit.receiver")
    with ReceiverServer(token="tok-SENSITIVE") as srv:
        auth = {"Authorization": "Bearer tok-SENSITIVE"}
        post(srv.url, batch(rec(1, service_id="svc-SENSITIVE")), key="k-log", headers=auth)
        post(srv.url, batch(rec(1, service_id="svc-SENSITIVE")), key="k-log", headers=auth)
        post(srv.url, batch(rec(1, status_id="x")), key="k-bad", headers=auth)
    lines = [r.getMessage() for r in caplog.records if r.name == "devkit.receiver"]
    text = "\n".join(lines)
    assert "key='k-log' count=1 status=200 duplicate=false" in text
    assert "key='k-log' count=1 status=200 duplicate=true" in text
    assert "key='k-bad' count=- status=400" in text
    assert "SENSITIVE" not in text


# --------------------------------------------------------------------------------------------
# faults
# --------------------------------------------------------------------------------------------


def test_status_fault_with_retry_after(url: str) -> None:
    add_faults(url, {"status": 503, "retry_after": "5"})
    response = post(url, batch(), key="k-503")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.json() == {"error": "injected fault"}
    assert stats(url)["batches"] == 0
    retry = post(url, batch(), key="k-503")
    assert retry.json() == {"accepted": 3, "duplicate": False, "idempotency_key": "k-503"}
    s = stats(url)
    assert (s["batches"], s["faults_served"]) == (1, 1)


def test_faults_are_fifo_and_times_repeats(url: str) -> None:
    add_faults(url, {"status": 500, "times": 2})
    add_faults(url, {"status": 429, "retry_after": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert get(url, "/faults") == {
        "faults": [
            {"status": 500, "times": 2},
            {"status": 429, "retry_after": "Wed, 21 Oct 2015 07:28:00 GMT", "times": 1},
        ]
    }
    assert post(url, batch()).status_code == 500
    assert get(url, "/faults")["faults"][0] == {"status": 500, "times": 1}
    assert post(url, batch()).status_code == 500
    third = post(url, batch())
    assert third.status_code == 429
    assert third.headers["Retry-After"] == "Wed, 21 Oct 2015 07:28:00 GMT"
    assert get(url, "/faults") == {"faults": []}
    assert post(url, batch()).status_code == 200
    assert stats(url)["faults_served"] == 3


def test_faults_only_hit_the_data_endpoint_and_can_be_cleared(url: str) -> None:
    add_faults(url, {"status": 503}, {"drop": "before_response", "times": 3})
    assert get(url, "/healthz") == {"ok": True}
    assert get(url, "/inspect/stats")["faults_served"] == 0
    assert requests.delete(f"{url}/faults", timeout=TIMEOUT).json() == {"cleared": 2}
    assert post(url, batch()).status_code == 200


@pytest.mark.parametrize(
    "fault",
    [
        {},
        {"status": 200},
        {"status": 503, "delay_s": 1},
        {"delay_s": 1, "retry_after": "5"},
        {"drop": "sometimes"},
        {"status": "503"},
        {"status": 503, "times": 0},
        {"status": 503, "colour": "red"},
    ],
)
def test_invalid_fault_specs_are_400(url: str, fault: dict[str, Any]) -> None:
    response = requests.post(f"{url}/faults", json={"faults": [fault]}, timeout=TIMEOUT)
    assert response.status_code == 400
    assert response.json()["reason"].startswith("faults[0]")
    assert get(url, "/faults") == {"faults": []}


def test_delay_fault_client_timeout_then_retry_is_a_duplicate(url: str) -> None:
    add_faults(url, {"delay_s": 1.2})
    started = time.monotonic()
    with pytest.raises(requests.exceptions.Timeout):
        post(url, batch(), key="k-slow", timeout=(TIMEOUT, 0.2))
    # The server keeps serving other requests while the delayed one sleeps.
    assert get(url, "/healthz") == {"ok": True}
    batches_during_delay = stats(url)["batches"]
    assert time.monotonic() - started < 1.0
    assert batches_during_delay == 0
    # ...and stores the batch once the delay is over, although the client has gone.
    wait_for(lambda: stats(url)["batches"] == 1)
    retry = post(url, batch(), key="k-slow")
    assert retry.json() == {"accepted": 3, "duplicate": True, "idempotency_key": "k-slow"}
    s = stats(url)
    assert (s["batches"], s["records"], s["duplicates"], s["faults_served"]) == (1, 3, 1, 1)


def test_delay_fault_shorter_than_timeout_is_just_slow(url: str) -> None:
    add_faults(url, {"delay_s": 0.2})
    started = time.monotonic()
    assert post(url, batch(), key="k-slowish").json()["duplicate"] is False
    assert time.monotonic() - started >= 0.2


def test_drop_before_response_is_a_connection_error_and_stores_nothing(proto_url: str) -> None:
    add_faults(proto_url, {"drop": "before_response"})
    with pytest.raises(requests.exceptions.ConnectionError) as excinfo:
        post(proto_url, batch(), key="k-drop")
    assert "Remote end closed connection without response" in str(excinfo.value)
    s = stats(proto_url)
    assert (s["batches"], s["faults_served"]) == (0, 1)
    retry = post(proto_url, batch(), key="k-drop")
    assert retry.json() == {"accepted": 3, "duplicate": False, "idempotency_key": "k-drop"}


def test_drop_before_response_on_a_kept_alive_session(proto_url: str) -> None:
    with requests.Session() as session:
        url = f"{proto_url}{DATA_PATH}"
        assert session.post(url, json=batch(), headers={"Idempotency-Key": "a"}).ok
        add_faults(proto_url, {"drop": "before_response"})
        with pytest.raises(requests.exceptions.ConnectionError):
            session.post(url, json=batch(), headers={"Idempotency-Key": "b"}, timeout=TIMEOUT)
        assert session.post(url, json=batch(), headers={"Idempotency-Key": "b"}).ok
    assert stats(proto_url)["batches"] == 2


def test_drop_mid_body_is_a_broken_response_after_storing(proto_url: str) -> None:
    add_faults(proto_url, {"drop": "mid_body"})
    with pytest.raises(requests.exceptions.ChunkedEncodingError) as excinfo:
        post(proto_url, batch(), key="k-mid")
    assert "IncompleteRead" in str(excinfo.value)
    # Not a ConnectionError: clients must treat ChunkedEncodingError as retryable too.
    assert not isinstance(excinfo.value, requests.exceptions.ConnectionError)
    assert stats(proto_url)["batches"] == 1
    retry = post(proto_url, batch(), key="k-mid")
    assert retry.json() == {"accepted": 3, "duplicate": True, "idempotency_key": "k-mid"}


def test_drop_mid_body_sends_fewer_bytes_than_content_length(proto_url: str) -> None:
    add_faults(proto_url, {"drop": "mid_body"})
    parts = urlsplit(proto_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT)
    try:
        conn.request(
            "POST",
            DATA_PATH,
            body=json.dumps(batch()),
            headers={"Content-Type": "application/json", "Idempotency-Key": "k-raw"},
        )
        response = conn.getresponse()
        assert response.status == 200
        declared = int(response.getheader("Content-Length"))
        with pytest.raises(http.client.IncompleteRead) as excinfo:
            response.read()
    finally:
        conn.close()
    assert 0 < len(excinfo.value.partial) < declared
    assert excinfo.value.partial.startswith(b'{"accepted":3')


# --------------------------------------------------------------------------------------------
# state, reset, persistence
# --------------------------------------------------------------------------------------------


def test_state_is_last_write_wins_in_arrival_order(url: str) -> None:
    post(url, batch(rec(1, status_id=1), rec(2, status_id=1)), key="b1")
    post(url, batch(rec(1, status_id=2, last_modified_date="2025-05-15T00:00:00Z")), key="b2")
    # Arrival order wins even when the later write carries an older last_modified_date.
    post(url, batch(rec(2, status_id=3, last_modified_date="2020-01-01T00:00:00Z")), key="b3")
    state = {(r["service_id"], r["request_id"]): r for r in get(url, "/inspect/state")}
    assert len(state) == 2
    assert state[("svc-1", "req-1")]["status_id"] == 2
    assert state[("svc-1", "req-1")]["last_modified_date"] == "2025-05-15T00:00:00Z"
    assert state[("svc-1", "req-2")]["status_id"] == 3
    assert set(state[("svc-1", "req-1")]) == set(rec(1))
    assert [r["idempotency_key"] for r in get(url, "/inspect/requests")] == [
        "b1",
        "b1",
        "b2",
        "b3",
    ]


def test_reset_clears_data_counters_and_faults(url: str) -> None:
    post(url, batch(), key="k1")
    post(url, batch(), key="k1")
    add_faults(url, {"status": 503})
    assert requests.delete(f"{url}/inspect", timeout=TIMEOUT).json() == {"ok": True}
    assert stats(url) == dict.fromkeys(
        ("batches", "records", "duplicates", "rejected", "faults_served"), 0
    )
    assert get(url, "/faults") == {"faults": []}
    assert get(url, "/inspect/batches") == []
    assert post(url, batch(), key="k1").json()["duplicate"] is False


def test_store_survives_a_restart(tmp_path: Path) -> None:
    store = tmp_path / "receiver.jsonl"
    with ReceiverServer(store_path=store) as srv:
        post(srv.url, batch(rec(1), rec(2)), key="p1")
        post(srv.url, batch(rec(1, status_id=9)), key="p2")
        post(srv.url, batch(rec(1, status_id=9)), key="p2")
        before = (get(srv.url, "/inspect/batches"), get(srv.url, "/inspect/state"))
    with ReceiverServer(store_path=store) as srv:
        assert (get(srv.url, "/inspect/batches"), get(srv.url, "/inspect/state")) == before
        s = stats(srv.url)
        assert (s["batches"], s["records"], s["duplicates"]) == (2, 3, 1)
        # The dedup index survived too.
        again = post(srv.url, batch(rec(1), rec(2)), key="p1")
        assert again.json() == {"accepted": 2, "duplicate": True, "idempotency_key": "p1"}
        assert post(srv.url, batch(rec(3)), key="p1").status_code == 422
        requests.delete(f"{srv.url}/inspect", timeout=TIMEOUT).raise_for_status()
    assert store.read_bytes() == b""
    with ReceiverServer(store_path=store) as srv:
        assert stats(srv.url)["batches"] == 0


def test_store_tolerates_a_torn_last_line(tmp_path: Path) -> None:
    store = tmp_path / "receiver.jsonl"
    with ReceiverServer(store_path=store) as srv:
        post(srv.url, batch(), key="t1")
    with store.open("ab") as fh:
        fh.write(b'{"v":1,"event":"batch","idempotency_key":"t2","rec')
    with ReceiverServer(store_path=store) as srv:
        assert stats(srv.url)["batches"] == 1
        post(srv.url, batch(), key="t2")
    with ReceiverServer(store_path=store) as srv:
        assert [b["idempotency_key"] for b in get(srv.url, "/inspect/batches")] == ["t1", "t2"]


def test_corrupt_store_refuses_to_start(tmp_path: Path) -> None:
    store = tmp_path / "receiver.jsonl"
    store.write_text("not json\n")
    with pytest.raises(ValueError, match="line 1"):
        create_app(store_path=store)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_cli(port: int, store: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "RECEIVER_TOKEN": "cli-SENSITIVE", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "devkit.receiver", "--port", str(port), "--store", str(store)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 15
    while True:
        try:
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).raise_for_status()
            return proc
        except requests.exceptions.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"receiver CLI did not start:\n{proc.communicate()[0]}")
            time.sleep(0.05)


def _stop_cli(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=10)
    return output


def test_cli_process_restart_keeps_state_and_logs_nothing_sensitive(tmp_path: Path) -> None:
    store = tmp_path / "cli.jsonl"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": "Bearer cli-SENSITIVE"}
    proc = _start_cli(port, store)
    try:
        assert post(url, batch(rec(1, service_id="svc-SENSITIVE")), key="c1").status_code == 401
        ok = post(url, batch(rec(1, service_id="svc-SENSITIVE")), key="c1", headers=auth)
        assert ok.json() == {"accepted": 1, "duplicate": False, "idempotency_key": "c1"}
    finally:
        first_output = _stop_cli(proc)
    proc = _start_cli(port, store)
    try:
        again = post(url, batch(rec(1, service_id="svc-SENSITIVE")), key="c1", headers=auth)
        assert again.json() == {"accepted": 1, "duplicate": True, "idempotency_key": "c1"}
    finally:
        second_output = _stop_cli(proc)
    assert "key='c1' count=1 status=200 duplicate=false" in first_output
    assert "key='c1' count=1 status=200 duplicate=true" in second_output
    assert "SENSITIVE" not in first_output + second_output
