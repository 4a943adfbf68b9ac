"""``HttpOperator`` for one planned batch of service requests."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.http.operators.http import HttpOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from services_sync.config import Settings, load_settings
from services_sync.delivery import PayloadTooLargeError
from services_sync.payload import (
    Interval,
    body_records,
    body_sha256,
    build_body,
    idempotency_key,
    scoped_key,
    split_body,
)
from services_sync.retry import DeliveryRetryPolicy, connect_retry_args
from services_sync.transform import format_identifier, format_timestamp

log = logging.getLogger(__name__)


class RequestBatchHttpOperator(HttpOperator):
    """POST one batch built by ``build_batch``: a plain ``HttpOperator`` plus two guarantees.

    * **No stale overwrite.** If this DAG has already delivered a *later* interval (this run
      failed past its retry budget and is being retried after the hours behind it went out),
      records whose source row changed since the batch was built are dropped before sending:
      the newer version was, or will be, delivered by the later interval, and sending the old
      one after it would overwrite it. The body, and so its key, is rebuilt from what is left.
    * **413 splits.** A ``413 Payload Too Large`` splits the body in halves, each sent with the
      key of its own content; halves of halves as needed, down to single records.

    Everything else (connection, timeout, ``response_check``, retries) is ``HttpOperator``'s.
    The XCom result is small: the batch index and one ack per body part.

    A CDC batch comes with ``key_scope`` (its first and last change positions): its keys are
    made from that instead of the data interval, and there is no stale check, since a CDC
    window is always delivered before the next one is captured.
    """

    def __init__(
        self,
        *,
        batch_index: int,
        batch_count: int = 0,
        key_scope: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.batch_index = batch_index
        self.batch_count = batch_count
        self.key_scope = key_scope

    def execute(self, context: Any) -> dict[str, Any]:
        """Drop superseded records, then POST the body (split on 413); return the acks."""
        settings = load_settings()
        dag_id = context["dag"].dag_id
        run_id = context["run_id"]
        interval = Interval(context["data_interval_start"], context["data_interval_end"])
        if self.key_scope is None:
            body = drop_superseded_records(
                self.data,
                interval,
                dag_id=dag_id,
                run_id=run_id,
                batch_index=self.batch_index,
                settings=settings,
            )
        else:
            body = self.data
        parts: list[dict[str, Any]] = []
        pending = [body]
        while pending:
            part = pending.pop(0)
            self.data = part
            key = (
                idempotency_key(interval, part)
                if self.key_scope is None
                else scoped_key(self.key_scope, part)
            )
            self.headers = {**self.headers, "Idempotency-Key": key}
            started = time.perf_counter()
            try:
                ack = super().execute(context)
            except PayloadTooLargeError as exc:
                try:
                    halves = split_body(part)
                except ValueError:
                    raise AirflowFailException(
                        f"{exc}: a single record is larger than the receiver accepts"
                    ) from exc
                log.warning(
                    "HTTP 413 for %d records: splitting in %d + %d",
                    len(body_records(part)),
                    len(body_records(halves[0])),
                    len(body_records(halves[1])),
                )
                pending[:0] = halves
                continue
            parts.append(ack)
            log.info(
                "batch %d/%d: %d records, %.1f KiB -> HTTP %s in %.0f ms%s",
                self.batch_index + 1,
                self.batch_count,
                ack["accepted"],
                len(part) / 1024,
                ack["status"],
                (time.perf_counter() - started) * 1000,
                " (duplicate)" if ack["duplicate"] else "",
            )
        return {"batch_index": self.batch_index, "parts": parts}


def post_batch_args(settings: Settings) -> dict[str, Any]:
    """``partial()`` arguments of the POST task, the same in both DAGs.

    The connection and endpoint, a JSON POST with the request timeout, the ack check and the
    small ack pushed to XCom, quick in-try reconnects, and task retries with exponential
    backoff, jitter and ``Retry-After`` (:class:`~services_sync.retry.DeliveryRetryPolicy`).
    """
    from services_sync.tasks import ack_summary, check_response

    return {
        "http_conn_id": settings.api_conn_id,
        "endpoint": settings.endpoint,
        "method": "POST",
        "response_check": check_response,
        "response_filter": ack_summary,
        "extra_options": {"timeout": settings.http_timeout, "check_response": False},
        "retry_args": connect_retry_args(settings.connect_attempts),
        "retries": settings.post_retries,
        "retry_delay": settings.post_retry_delay,
        "retry_exponential_backoff": settings.post_retry_backoff,
        "max_retry_delay": settings.post_max_retry_delay,
        "retry_policy": DeliveryRetryPolicy(
            retry_delay=settings.post_retry_delay,
            backoff=settings.post_retry_backoff,
            max_retry_delay=settings.post_max_retry_delay,
            max_retry_after=settings.max_retry_after,
        ),
    }


def drop_superseded_records(
    body: str,
    interval: Interval,
    *,
    dag_id: str,
    run_id: str,
    batch_index: int,
    settings: Settings | None = None,
) -> str:
    """The body without the records whose source row changed since it was built.

    Only done when a later interval has already been delivered: while this run is the newest,
    nothing newer can have reached the receiver, and the body is sent exactly as built (same
    key on every retry). The check reads the source rows in the time span of the batch only.
    """
    # Imported here: the DAG file imports this module at parse time (see tasks.py).
    from services_sync import source, state
    from services_sync.db import connect

    settings = settings or load_settings()
    with connect(settings.state_conn_id) as conn:
        if not state.later_interval_delivered(
            conn, settings.state_schema, dag_id=dag_id, interval_start=interval.start
        ):
            return body
    records = body_records(body)
    stamps = [r["last_modified_date"] for r in records]
    start = max(interval.start, _parse_utc(min(stamps)))
    end = min(interval.end, _parse_utc(max(stamps)) + timedelta(seconds=1))
    with connect(settings.source_conn_id) as conn:
        rows = source.current_versions(conn, start, end)
    current = {
        (
            _safe_id(sid, "service_id"),
            _safe_id(rid, "request_id"),
            format_timestamp(lmd, "last_modified_date", settings.naive_timezone),
        )
        for sid, rid, lmd in rows
        if lmd is not None
    }
    kept = [
        r for r in records if (r["service_id"], r["request_id"], r["last_modified_date"]) in current
    ]
    if len(kept) == len(records):
        return body
    superseded = len(records) - len(kept)
    new_body = build_body(kept) if kept else None
    with connect(settings.state_conn_id) as conn:
        state.record_batch_refreshed(
            conn,
            settings.state_schema,
            dag_id=dag_id,
            run_id=run_id,
            batch_index=batch_index,
            idempotency_key=idempotency_key(interval, new_body) if new_body else None,
            rows_sent=len(kept),
            rows_superseded=superseded,
            body_bytes=len(new_body) if new_body else 0,
            body_sha256=body_sha256(new_body) if new_body else None,
        )
    log.warning(
        "%d of %d records changed at the source since this batch was built and a later interval "
        "was already delivered: not sending their older versions",
        superseded,
        len(records),
    )
    if new_body is None:
        raise AirflowSkipException("every record of this batch was superseded by a newer version")
    return new_body


def _parse_utc(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _safe_id(value: Any, field: str) -> str | None:
    try:
        return format_identifier(value, field)
    except ValueError:
        return None
