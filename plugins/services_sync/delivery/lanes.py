"""Delivery lanes: the ``HttpOperator`` that sends the outbox's pending batches.

The POST task is mapped over a fixed number of lanes (``SERVICES_SYNC_LANES``), not over
batches, so a run has the same number of task instances whatever its volume. A lane sends
its batches in order over one keep-alive session and checkpoints every acknowledgment in the
ledger as it arrives; when the lane fails and Airflow retries it (exponential backoff, jitter,
``Retry-After``: :class:`~services_sync.core.retry.DeliveryRetryPolicy`), the retry starts at the
first batch not acknowledged yet. Batches that earlier runs could not deliver (an outage
longer than their retry budget) are pending too and come first, oldest interval first.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
import tenacity
from airflow.providers.http.operators.http import HttpOperator
from airflow.sdk.exceptions import AirflowFailException

from services_sync.core.ack import (
    PayloadTooLargeError,
    RejectedDeliveryError,
    RetryableDeliveryError,
    TransientDeliveryFailure,
    check_ack,
)
from services_sync.core.config import Settings, load_settings
from services_sync.core.payload import (
    body_records,
    build_body,
    pack_body,
    part_key,
    request_headers,
    split_body,
    unpack_body,
)
from services_sync.core.retry import DeliveryRetryPolicy, connect_retry_args
from services_sync.core.transform import format_identifier, format_timestamp
from services_sync.delivery.capture import QuerySource

log = logging.getLogger(__name__)

#: What a lost or stalled connection raises once the in-try reconnects are used up: the next
#: try comes after the retry policy's backoff. Any other error is unexpected, with a traceback.
_LOST_CONNECTION = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


class DeliveryLaneOperator(HttpOperator):
    """POST the pending batches of one delivery lane, oldest first, over one session.

    ``lane`` is this instance's lane (the mapped argument), ``lanes`` how many the DAG maps; a
    batch built with lane ``b`` is sent by lane ``b % lanes``, so batches built before a
    change of the lane count are still sent, each request's batches by one lane, in order.

    * **Acks checkpointed.** Each acknowledgment is written to the ledger the moment it
      arrives (never from an earlier try's result), so a retry, or a later run, resumes at the
      first unacknowledged batch.
    * **One bad batch stops only itself.** A rejection (4xx, a wrong count) marks that batch
      ``rejected`` with the receiver's reason, the lane goes on, and the task fails at the end
      without retrying. A transient failure (5xx, 429, connection, timeout) ends the try at
      once: the next try comes after the retry policy's backoff or ``Retry-After``, and the
      task log gets one line for it, not a traceback.
    * **413 splits** the body in halves, each sent with the key of its own content.
    * **No stale overwrite** (query mode: ``source``, the table the DAG reads): a batch of an
      interval older than the newest one built is sent without the records whose source row
      changed since (the newer version is, or will be, delivered by the later interval). CDC
      mode passes none: it delivers its windows one after the other, in commit order.
    """

    def __init__(
        self,
        *,
        lane: int,
        lanes: int,
        source: QuerySource | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.lane = lane
        self.lanes = lanes
        self.source = source

    def execute(self, context: Any) -> dict[str, Any]:
        """Send every pending batch of this lane; return counts (the XCom is a few bytes)."""
        from services_sync.core import outbox
        from services_sync.core.db import connect

        settings = load_settings()
        dag_id = context["dag"].dag_id
        run_id = context["run_id"]
        attempt = int(getattr(context["ti"], "try_number", 1) or 1)
        counts = {"lane": self.lane, "batches": 0, "records": 0, "duplicates": 0, "drained": 0}
        rejected: list[str] = []
        hook = self.hook
        session = hook.get_conn(self.headers, self.extra_options)
        url = hook.url_from_endpoint(self.endpoint)
        gzip_ok = str(session.headers.get("Content-Encoding", "")).lower() == "gzip"
        with (
            connect(settings.state_conn_id, autocommit=True) as state,
            outbox.lane_lock(state, settings.state_schema, dag_id=dag_id, lane=self.lane),
        ):
            while True:
                batch = outbox.next_pending(
                    state,
                    settings.state_schema,
                    dag_id=dag_id,
                    lane=self.lane,
                    lanes=self.lanes,
                    up_to=context.get("data_interval_start"),
                )
                if batch is None:
                    break
                body, key = unpack_body(batch.stored_body), batch.key
                # The stored gzip bytes go out as they are unless the body changes here.
                stored: bytes | None = batch.stored_body
                if self.source is not None and _later_interval_built(state, settings, batch):
                    # Always from the stored body, so a retry computes the same result.
                    kept, superseded = drop_superseded_records(body, batch, settings, self.source)
                    if superseded:
                        key = part_key(batch.key, kept) if kept else None
                        outbox.record_refreshed(
                            state,
                            settings.state_schema,
                            batch,
                            body=kept,
                            key=key,
                            rows_sent=len(body_records(kept)) if kept else 0,
                            rows_superseded=superseded,
                        )
                        if kept is None or key is None:
                            continue  # every record has a newer version on its way
                        body, stored = kept, None
                try:
                    acks = self._send(hook, session, url, body, key, stored, gzip_ok)
                except RejectedDeliveryError as exc:
                    outbox.record_rejection(
                        state,
                        settings.state_schema,
                        batch,
                        http_status=exc.status,
                        attempts=attempt,
                        error=str(exc),
                    )
                    log.error("%s rejected: %s", batch.label, exc)
                    rejected.append(f"{batch.label}: {exc}")
                    continue
                except (RetryableDeliveryError, *_LOST_CONNECTION) as exc:
                    raise TransientDeliveryFailure.from_error(exc, batch.label) from exc
                outbox.record_ack(
                    state,
                    settings.state_schema,
                    batch,
                    acks=acks,
                    attempts=attempt,
                    delivered_by_run=run_id,
                )
                counts["batches"] += 1
                counts["records"] += sum(a["accepted"] for a in acks)
                counts["duplicates"] += all(a["duplicate"] for a in acks)
                counts["drained"] += batch.run_id != run_id
        if rejected:
            raise AirflowFailException(
                f"lane {self.lane + 1}: {len(rejected)} batch(es) rejected by the receiver "
                "(kept in the outbox as rejected; fix the cause, then rerun the interval): "
                + "; ".join(rejected[:5])
            )
        log.info(
            "lane %d/%d: %d batches (%d records) acknowledged, %d of them from earlier runs, "
            "%d already at the receiver",
            self.lane + 1,
            self.lanes,
            counts["batches"],
            counts["records"],
            counts["drained"],
            counts["duplicates"],
        )
        return counts

    def _send(
        self,
        hook: Any,
        session: requests.Session,
        url: str,
        body: str,
        key: str,
        stored: bytes | None,
        gzip_ok: bool,
    ) -> list[dict[str, Any]]:
        """POST a body (split on 413); return one ack per part sent."""
        acks: list[dict[str, Any]] = []
        pending: list[tuple[str, str, bytes | None]] = [(body, key, stored)]
        while pending:
            part, part_key_, packed = pending.pop(0)
            records = len(body_records(part))
            if gzip_ok:
                data = packed if packed is not None else pack_body(part)
            else:
                data = part.encode("ascii")
            started = time.perf_counter()
            response = self._post(hook, session, url, data, part_key_, gzip_ok)
            try:
                ack = check_ack(response.status_code, response.headers, response.text, records)
            except PayloadTooLargeError as exc:
                try:
                    halves = split_body(part)
                except ValueError:
                    raise RejectedDeliveryError(
                        f"{exc}: a single record is larger than the receiver accepts", 413
                    ) from exc
                log.warning(
                    "HTTP 413 for %d records: splitting in %d + %d",
                    records,
                    len(body_records(halves[0])),
                    len(body_records(halves[1])),
                )
                pending[:0] = [(h, part_key(key, h), None) for h in halves]
                continue
            acks.append(
                {"status": ack.status, "accepted": ack.accepted, "duplicate": ack.duplicate}
            )
            log.info(
                "lane %d: %d records, %.1f KiB -> HTTP %d in %.0f ms%s  %s",
                self.lane + 1,
                records,
                len(data) / 1024,
                ack.status,
                (time.perf_counter() - started) * 1000,
                " (duplicate)" if ack.duplicate else "",
                part_key_,
            )
        return acks

    def _post(
        self,
        hook: Any,
        session: requests.Session,
        url: str,
        data: bytes,
        key: str,
        gzip_ok: bool,
    ) -> requests.Response:
        """One POST on the lane's session; quick in-try retries of a lost connection."""
        headers = request_headers(key)
        if gzip_ok:
            headers["Content-Encoding"] = "gzip"

        def send() -> requests.Response:
            request = session.prepare_request(
                requests.Request("POST", url, data=data, headers=headers)
            )
            return hook.run_and_check(session, request, hook.merged_extra)

        if not self.retry_args:
            return send()
        return tenacity.Retrying(**self.retry_args)(send)


def _later_interval_built(state: Any, settings: Settings, batch: Any) -> bool:
    from services_sync.core import outbox

    return batch.interval_start is not None and outbox.later_interval_built(
        state, settings.state_schema, dag_id=batch.dag_id, interval_start=batch.interval_start
    )


def lane_args(settings: Settings) -> dict[str, Any]:
    """``partial()`` arguments of the POST task, the same in both DAGs.

    The connection and endpoint, the request timeout, quick in-try reconnects, task retries
    with exponential backoff, jitter and ``Retry-After``, and no failure alert of its own: the
    run's ``record_delivery`` sends one alert naming every batch that was not acknowledged.
    """
    return {
        "http_conn_id": settings.api_conn_id,
        "endpoint": settings.endpoint,
        "method": "POST",
        "lanes": settings.lanes,
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
        "on_failure_callback": [],
        "pool": settings.post_pool,
        "map_index_template": "lane {{ task.lane + 1 }}",
    }


def lane_numbers(settings: Settings) -> list[int]:
    """The mapped lanes: ``[0, 1, ..., lanes - 1]``."""
    return list(range(settings.lanes))


def drop_superseded_records(
    body: str, batch: Any, settings: Settings, source: QuerySource
) -> tuple[str | None, int]:
    """The body without the records whose source row has a newer version since it was built.

    Returns the new body (None when no record is left) and how many records were dropped.
    Called only when a later interval has been built: while this batch's interval is the newest,
    nothing newer can reach the receiver before it, and the body goes out exactly as built (same
    key on every retry). Reads the source rows in the batch's time span, then looks up by key
    only the records that left it: a record is dropped only when its row has a newer version.
    ``source``: the table the DAG reads (PostgreSQL or MySQL / MariaDB).
    """
    reads = source.reads()
    records = body_records(body)
    stamps = [r["last_modified_date"] for r in records]
    start = max(batch.interval_start, _parse_utc(min(stamps)))
    end = min(batch.interval_end, _parse_utc(max(stamps)) + timedelta(seconds=1))
    with source.connect(settings) as conn:
        current = {
            (
                _safe_id(sid, "service_id"),
                _safe_id(rid, "request_id"),
                format_timestamp(lmd, "last_modified_date", settings.naive_timezone),
            )
            for sid, rid, lmd in reads.current_versions(conn, start, end)
            if lmd is not None
        }
        moved = [
            r
            for r in records
            if (r["service_id"], r["request_id"], r["last_modified_date"]) not in current
        ]
        # Absent from the slice is not yet superseded (a deleted row, or a slice read in the
        # wrong zone would look the same): only a newer version of the key is.
        newer = reads.newer_versions(conn, moved)
    kept = [r for r in records if (r["service_id"], r["request_id"]) not in newer]
    if len(kept) == len(records):
        return body, 0
    log.warning(
        "%s: %d of %d records changed at the source since it was built and a later interval "
        "was built: not sending their older versions",
        batch.label,
        len(records) - len(kept),
        len(records),
    )
    return (build_body(kept) if kept else None), len(records) - len(kept)


def _parse_utc(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _safe_id(value: Any, field: str) -> str | None:
    try:
        return format_identifier(value, field)
    except ValueError:
        return None
