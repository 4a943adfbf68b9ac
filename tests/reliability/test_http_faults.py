"""The receiver misbehaves: down, overloaded, slow, cut off, rejecting. Every run reconciles."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from tests.reliability.harness import (
    HOUR,
    H,
    add_faults,
    clear_faults,
    insert,
    inspect,
    interval,
    lane_of,
    ledger,
    pending_faults,
    receiver_log,
    resume_run,
    rows_for,
    run_interval,
    task_instances,
    wait_for,
)
from tests.reliability.reconcile import reconcile

pytestmark = pytest.mark.e2e


def test_receiver_down_connection_refused_then_back_up(dag, source_db, own_receiver, monkeypatch):
    from services_sync.core.retry import DeliveryRetryPolicy

    insert(source_db, rows_for(H, 45, "DOWN") + rows_for(H + HOUR, 5, "NEXT"))
    own_receiver.stop()

    # The receiver comes back once a try has met the closed port and the retry policy was asked
    # about it (the real policy decides; this only notes that it was asked): no guess of how
    # long building and the first POSTs take. A lane has 4 tries, over at least 2 s of backoff.
    refused = threading.Event()
    evaluate = DeliveryRetryPolicy.evaluate

    def noting_refusals(self, exception, *args, **kwargs):
        if "receiver unreachable (ConnectionError" in str(exception):
            refused.set()
        return evaluate(self, exception, *args, **kwargs)

    monkeypatch.setattr(DeliveryRetryPolicy, "evaluate", noting_refusals)

    def bring_back() -> None:
        if refused.wait(timeout=120):
            own_receiver.start()

    restarter = threading.Thread(target=bring_back, daemon=True)
    restarter.start()
    run = run_interval(dag, H, batch_size=15)
    restarter.join(timeout=120)

    assert refused.is_set(), "no POST met the closed port"
    assert run.state == "success"
    assert own_receiver.running
    tries = {ti.map_index: ti.try_number for ti in task_instances(run, "post_batches")}
    assert max(tries.values()) >= 2, f"no POST met the closed port (tries {tries})"
    rows = ledger(source_db, run.run_id)
    assert len(rows) == 3
    # Each ack was recorded by the try of its lane that got it.
    assert [row["attempts"] for row in rows] == [tries[lane_of(r["batch_index"])] for r in rows]
    reconcile(source_db, own_receiver.url, [interval(H)])


def test_503_storm_across_batches(dag, source_db, receiver, capsys):
    insert(source_db, rows_for(H, 60, "STORM"))
    add_faults(receiver.url, {"status": 503, "retry_after": "0", "times": 6})

    run = run_interval(dag, H, batch_size=15)

    # An expected transient failure is two log lines, not a traceback: what failed, and when
    # the next try comes (regression: each 503 printed a full traceback).
    out = capsys.readouterr().out
    assert "Traceback" not in out
    exited = [line for line in out.splitlines() if "Task exited" in line]
    assert len(exited) == 6
    assert all("HTTP 503 (transient, Retry-After 0s): injected fault" in line for line in exited)
    decisions = [line for line in out.splitlines() if "Retry policy decision" in line]
    assert len(decisions) == 6 and all("next try in" in line for line in decisions)

    assert run.state == "success"
    assert inspect(receiver.url, "stats")["faults_served"] == 6
    lanes = task_instances(run, "post_batches")
    assert len(lanes) == 4
    # A 503 is answered, not a lost connection: one failed try each, no in-try resend.
    assert sum(ti.try_number - 1 for ti in lanes) == 6
    assert all(row["http_status"] == 200 for row in ledger(source_db, run.run_id))
    result = reconcile(source_db, receiver.url, [interval(H)])
    assert len(result.expected) == 60
    assert inspect(receiver.url, "stats")["duplicates"] == 0


def test_429_retry_after_is_honored_and_capped(dag, source_db, receiver, capsys):
    """Retry-After in seconds, as an HTTP-date and absurdly long: the wait is honored, capped.

    The cap in tests is SERVICES_SYNC_MAX_RETRY_AFTER_S=2, and the backoff is at most 1 s
    (SERVICES_SYNC_MAX_RETRY_DELAY_S), so a decision of 2 s proves the header was read and the
    cap applied; the receiver then sees the retry no sooner than that. How much later it comes
    depends on the machine's load, so it has no upper bound here.
    """
    insert(source_db, rows_for(H, 40, "SLOW"))
    in_an_hour = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
    asked = ["2", in_an_hour, "3600"]
    add_faults(receiver.url, *({"status": 429, "retry_after": value} for value in asked))

    with receiver_log() as log:
        run = run_interval(dag, H, batch_size=20)

    assert run.state == "success"
    assert pending_faults(receiver.url) == []
    # The policy's decision for each throttled try, as Airflow logs it: the Retry-After wait,
    # capped at 2 s, not the backoff (seconds, an HTTP-date in an hour and 3600 s alike).
    out = capsys.readouterr().out
    exited = [line for line in out.splitlines() if "Task exited" in line]
    assert len(exited) == 3 and all("HTTP 429 (transient, Retry-After" in x for x in exited)
    decisions = [line for line in out.splitlines() if "Retry policy decision" in line]
    assert len(decisions) == 3, decisions
    assert all(re.search(r"next try in 2\.0 s \(Retry-After, after try \d\)", d) for d in decisions)
    throttled = [r for r in log.requests if r.fault == "status=429"]
    assert len(throttled) == 3
    for value, first in zip(asked, throttled, strict=True):
        retry = log.after(first)
        assert retry is not None, f"the batch throttled with Retry-After {value!r} never came back"
        gap = retry.at - first.at
        assert gap >= 1.95, f"Retry-After {value!r}: retried after {gap:.2f} s, want >= 2 s"
    reconcile(source_db, receiver.url, [interval(H)])


def test_responses_slower_than_the_timeout(dag, source_db, receiver):
    """The receiver stores the batch but answers after the client gave up (7 s > 5 s timeout).

    Both in-try attempts of the first try time out (the fault applies twice); the first request
    is stored at 7 s. The task retries and the same body with the same key is acknowledged as a
    duplicate: nothing is stored twice.
    """
    insert(source_db, rows_for(H, 30, "TIMEOUT"))
    add_faults(receiver.url, {"delay_s": 7, "times": 2})

    with receiver_log() as log:
        run = run_interval(dag, H, batch_size=15)
        # The second delayed request is processed after the client gave up on it, too (at most
        # 7 s after it came; the timeout is generous, waiting ends as soon as it is there).
        wait_for(
            lambda: inspect(receiver.url, "stats")["duplicates"] == 2,
            timeout_s=60,
            what="both resends of the slow batch to be acknowledged as duplicates",
        )

    assert run.state == "success"
    assert pending_faults(receiver.url) == []
    rows = ledger(source_db, run.run_id)
    slow = [row for row in rows if row["duplicate"]]
    assert len(slow) == 1, rows
    assert slow[0]["attempts"] == 2
    seen = [r for r in log.requests if r.is_for(slow[0]["idempotency_key"])]
    assert [r.fault for r in seen if r.fault] == ["delay_s=7", "delay_s=7"]
    # Stored once, by the first request (answered at 7 s, too late); every resend, including
    # the task's retry whose ack the ledger holds, carried the same key and was a duplicate.
    assert [(r.status, r.duplicate) for r in seen if not r.fault] == [
        (200, False),
        (200, True),
        (200, True),
    ]
    batches = inspect(receiver.url, "batches")
    assert sorted(b["idempotency_key"] for b in batches) == sorted(
        row["idempotency_key"] for row in rows
    )
    result = reconcile(source_db, receiver.url, [interval(H)])
    assert result.redelivered == {}


def test_connection_dropped_mid_body_and_before_response(dag, source_db, receiver):
    """A cut response after the batch was stored, then a cut before anything was stored.

    ``delay_s: 0`` is a pass-through, so the first batch gets mid_body then a normal answer
    (its in-try resend) and the second batch gets before_response then a normal answer.
    """
    insert(source_db, rows_for(H, 40, "DROP"))
    add_faults(receiver.url, {"drop": "mid_body"}, {"delay_s": 0}, {"drop": "before_response"})

    with receiver_log() as log:
        run = run_interval(dag, H, batch_size=20)

    assert run.state == "success"
    assert pending_faults(receiver.url) == []
    assert [r.fault for r in log.requests if r.fault and r.fault.startswith("drop")] == [
        "drop=mid_body",
        "drop=before_response",
    ]
    rows = ledger(source_db, run.run_id)
    # Resent within the first try (connect_retry_args): no task retry was needed.
    assert [row["attempts"] for row in rows] == [1, 1]
    # mid_body: stored, so the resend is a duplicate; before_response: nothing stored.
    assert sorted(row["duplicate"] for row in rows) == [False, True]
    stats = inspect(receiver.url, "stats")
    assert (stats["batches"], stats["duplicates"]) == (2, 1)
    reconcile(source_db, receiver.url, [interval(H)])


def test_a_400_for_one_batch_fails_fast_and_rerunning_the_run_delivers_it(
    dag, source_db, receiver, capsys
):
    insert(source_db, rows_for(H, 120, "REJECT"))
    add_faults(receiver.url, {"status": 400, "match": "REJECT-00000"})  # in batch 1

    run = run_interval(dag, H, batch_size=15)  # 8 batches, two per lane

    assert run.state == "failed"
    lanes = task_instances(run, "post_batches")
    assert [ti.state for ti in lanes] == ["failed", "success", "success", "success"]
    assert lanes[0].try_number == 1, "a 400 must not be retried"
    rows = ledger(source_db, run.run_id)
    # Batch 1 (lane 1) was refused; lane 1 went on with batch 5.
    assert [r["status"] for r in rows] == ["rejected"] + ["acked"] * 7
    assert rows[0]["error"] == "HTTP 400 rejected the batch: injected fault"
    out = capsys.readouterr().out
    assert f"batch 1 of {run.run_id}: HTTP 400 rejected the batch: injected fault" in out
    stats = inspect(receiver.url, "stats")
    assert (stats["batches"], stats["rejected"]) == (7, 0)
    assert task_instances(run, "record_delivery")[0].state == "failed"

    # Clearing only the failed lane does not resend a rejected batch: the receiver said no.
    resumed = resume_run(dag, run.run_id)
    assert resumed.state == "failed"
    assert inspect(receiver.url, "stats")["batches"] == 7

    # Once the cause is fixed, rerunning the whole run rebuilds the interval and sends it.
    clear_faults(receiver.url)
    rerun = resume_run(dag, run.run_id, only_failed=False)

    assert rerun.state == "success"
    stats = inspect(receiver.url, "stats")
    assert (stats["batches"], stats["duplicates"]) == (8, 7)
    reconcile(source_db, receiver.url, [interval(H)])
