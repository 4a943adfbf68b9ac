"""The sync status view on a real PostgreSQL ledger, through its FastAPI app and the plugin."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient

from services_sync.core.state import ensure_state_tables
from services_sync.ui import app, queries
from services_sync.ui.model import DAG_ID
from tests.status_ledger import (
    BAD_DEPLOY,
    FAILED,
    OUTAGE,
    QUIET,
    RERUN,
    build_ledger,
    insert_ledger,
)

NEWEST_END = datetime(2025, 5, 16, 12, tzinfo=UTC)


@pytest.fixture
def ledger(source_db):
    """48 realistic hours in the ledger of the source database (the default state connection)."""
    data = build_ledger(NEWEST_END)
    insert_ledger(source_db, data)
    return data


def _client() -> TestClient:
    # Ledger only: the test process has no Airflow runs (tests/operate covers them).
    return TestClient(app.create_app(lambda: app.load_report(runs=None)))


def test_json_matches_the_ledger(ledger):
    response = _client().get("/api/intervals")
    assert response.status_code == 200
    data = response.json()
    assert data["problem"] is None
    assert data["state_conn_id"] == "services_source_db"
    intervals = data["intervals"]
    assert len(intervals) == 48
    starts = [datetime.fromisoformat(i["interval_start"]) for i in intervals]
    assert starts == sorted(ledger.expected, reverse=True)  # newest first, no gap

    for item in intervals:
        start = datetime.fromisoformat(item["interval_start"])
        expected_status, run_id = ledger.expected[start]
        assert (item["status"], item["run_id"]) == (expected_status, run_id), start
        batches = [b for b in ledger.batches if b["run_id"] == run_id]
        acked = [b for b in batches if b["acked_at"] is not None]
        assert item["rows_extracted"] == sum(b["rows_extracted"] for b in batches)
        assert item["rows_delivered"] == sum(b["rows_sent"] for b in acked)
        assert item["rows_quarantined"] == sum(b["rows_quarantined"] for b in batches)
        assert item["duplicates_avoided"] == sum(1 for b in acked if b["duplicate"])
        assert (item["batches"], item["batches_acked"]) == (len(batches), len(acked))
        if acked:
            lag = max(b["acked_at"] for b in acked) - datetime.fromisoformat(item["interval_end"])
            assert item["delivery_lag_s"] == lag.total_seconds()
        else:
            assert item["delivery_lag_s"] is None

    by_ago = {
        round((NEWEST_END - s).total_seconds() / 3600) - 1: i
        for s, i in zip(starts, intervals, strict=True)
    }
    assert by_ago[QUIET]["status"] == "no changes"
    assert by_ago[RERUN]["run_count"] == 2
    assert by_ago[RERUN]["run_id"].startswith("backfill__")
    assert by_ago[RERUN]["duplicates_avoided"] == by_ago[RERUN]["batches"] > 0
    assert by_ago[BAD_DEPLOY]["rows_quarantined"] >= 12
    assert by_ago[max(OUTAGE)]["delivery_lag_s"] == timedelta(hours=3, minutes=10).total_seconds()
    assert by_ago[FAILED]["last_error"].startswith(
        f"{by_ago[FAILED]['batches']} of {by_ago[FAILED]['batches']} batches not acknowledged"
    )
    assert data["totals"]["rows_delivered"] == sum(i["rows_delivered"] for i in intervals)
    assert data["totals"]["needs_attention"] == 2  # the failed hour and the newest, unacked


def test_the_page_shows_the_table_and_the_chart(ledger):
    response = _client().get("/")
    assert response.status_code == 200
    page = response.text
    assert '<table id="intervals">' in page
    assert page.count("<tr class=") == 48
    assert page.count('<g class="slot') == 48
    newest_run = ledger.run_id(0).split("__", 1)
    assert f"{newest_run[0]}__<wbr>{newest_run[1]}" in page
    assert "2025-05-16 11:00\u201312:00" in page
    assert "not acknowledged" in page


def test_the_view_reads_what_the_dag_writes(source_db):
    """The DAG's own ledger writers (build, the lanes' acks, record_delivery), then the view."""
    from services_sync.core import outbox, state
    from services_sync.core.payload import Interval, build_body

    start = NEWEST_END - timedelta(hours=1)
    interval = Interval(start, NEWEST_END)
    with psycopg.connect(source_db) as conn:
        state.ensure_state_tables(conn, "services_sync")
        for index, (extracted, quarantined) in enumerate(((5, 1), (3, 0))):
            records = extracted - quarantined
            outbox.store_batch(
                conn,
                "services_sync",
                outbox.BuiltBatch(
                    batch_index=index,
                    lane=index,
                    rows_extracted=extracted,
                    rows_quarantined=quarantined,
                    records=records,
                    body=build_body([{"request_id": str(i)} for i in range(records)]),
                    key=f"k{index}",
                    lower_bound=[],
                    upper_bound=[],
                ),
                dag_id=DAG_ID,
                run_id="scheduled__w",
                interval=interval,
            )
            outbox.record_ack(
                conn,
                "services_sync",
                outbox.PendingBatch(
                    DAG_ID, "scheduled__w", index, start, NEWEST_END, None, f"k{index}", b""
                ),
                acks=[{"status": 201, "accepted": records, "duplicate": index == 1}],
                attempts=2,
                delivered_by_run="scheduled__w",
            )  # fmt: skip
        state.record_run(
            conn,
            "services_sync",
            dag_id=DAG_ID,
            run_id="scheduled__w",
            interval_start=interval.start,
            interval_end=interval.end,
            rows_extracted=8,
            batches=2,
            batches_posted=2,
            rows_sent=7,
            rows_quarantined=1,
            duplicates=1,
        )
        acked_at = conn.execute(
            "SELECT max(acked_at) FROM services_sync.delivery_ledger"
        ).fetchone()[0]
    [item] = _client().get("/api/intervals").json()["intervals"]
    assert item["status"] == "delivered"
    assert (item["rows_extracted"], item["rows_delivered"], item["rows_quarantined"]) == (8, 7, 1)
    assert item["duplicates_avoided"] == 1
    assert item["delivery_lag_s"] == pytest.approx((acked_at - NEWEST_END).total_seconds())
    assert item["lanes"] == [
        {"lane": 0, "batches": 1, "acked": 1},
        {"lane": 1, "batches": 1, "acked": 1},
    ]
    assert item["drained_batches"] == 0


def test_a_failed_run_whose_batches_a_later_run_sent_is_delivered(source_db):
    """An outage outlasts a run's retries; the next run's lanes drain its batches first."""
    from services_sync.core import outbox
    from services_sync.core.payload import Interval, build_body
    from services_sync.ui.model import RunInfo

    start = NEWEST_END - timedelta(hours=1)
    with psycopg.connect(source_db) as conn:
        ensure_state_tables(conn, "services_sync")
        for index in (0, 1, 2):
            outbox.store_batch(
                conn,
                "services_sync",
                outbox.BuiltBatch(
                    batch_index=index,
                    lane=index % 2,
                    rows_extracted=2,
                    rows_quarantined=0,
                    records=2,
                    body=build_body([{"request_id": f"{index}-{i}"} for i in range(2)]),
                    key=f"k{index}",
                    lower_bound=[],
                    upper_bound=[],
                ),
                dag_id=DAG_ID,
                run_id="scheduled__failed",
                interval=Interval(start, NEWEST_END),
            )
            outbox.record_ack(
                conn,
                "services_sync",
                outbox.PendingBatch(
                    DAG_ID, "scheduled__failed", index, start, NEWEST_END, None, f"k{index}", b""
                ),
                acks=[{"status": 201, "accepted": 2, "duplicate": False}],
                attempts=1,
                # The failed run's own lane got batch 0 through; the next run sent the rest.
                delivered_by_run="scheduled__failed" if index == 0 else "scheduled__next",
            )  # fmt: skip

    def failed(dag_id, run_ids, window):
        return {r: RunInfo(r, "failed", failed_tasks=("post_batches lane 2",)) for r in run_ids}

    report = app.load_report(runs=failed)
    [item] = report.intervals
    assert item.status == "delivered"
    assert item.drained_batches == 2
    assert item.lanes == ((0, 2, 2), (1, 1, 1))
    assert "2 batch(es) delivered by a later run" in (item.last_error or "")


def test_a_window_reaches_back_from_the_newest_interval(source_db):
    old = build_ledger(NEWEST_END - timedelta(days=30), hours=5, seed=3)
    new = build_ledger(NEWEST_END, hours=3, seed=4)
    insert_ledger(source_db, old)
    insert_ledger(source_db, new)  # the same tables: ensure_state_tables is idempotent
    intervals = _client().get("/api/intervals").json()["intervals"]
    # 30 days apart: the old hours are outside the window, and no gap is invented before the
    # oldest hour inside it.
    assert [i["run_id"] for i in intervals] == [new.run_id(0), new.run_id(1), new.run_id(2)]


def test_hours_missing_between_runs_are_gaps(source_db):
    data = build_ledger(NEWEST_END, hours=6, seed=5)
    gone = {data.start(2), data.start(3)}
    data.batches = [b for b in data.batches if b["interval_start"] not in gone]
    data.runs = [r for r in data.runs if r["interval_start"] not in gone]
    insert_ledger(source_db, data)
    intervals = _client().get("/api/intervals").json()["intervals"]
    assert [i["status"] for i in intervals][1:5] == ["delivered", "no run", "no run", "delivered"]


def test_stale_batches_of_a_rebuilt_smaller_plan_are_not_counted(source_db):
    start = NEWEST_END - timedelta(hours=1)
    run_id = "scheduled__x"
    with psycopg.connect(source_db) as conn:
        ensure_state_tables(conn, "services_sync")
        for index, acked in ((0, start + timedelta(hours=2)), (1, start + timedelta(hours=1))):
            conn.execute(
                "INSERT INTO services_sync.delivery_ledger (dag_id, run_id, batch_index, "
                "interval_start, interval_end, rows_extracted, rows_quarantined, rows_sent, "
                "body_bytes, built_at, http_status, accepted, duplicate, attempts, acked_at) "
                "VALUES (%s, %s, %s, %s, %s, 10, 0, 10, 100, %s, 201, 10, false, 1, %s)",
                (
                    DAG_ID,
                    run_id,
                    index,
                    start,
                    NEWEST_END,
                    acked - timedelta(minutes=1),
                    acked,
                ),
            )
        # The rerun planned a single batch (rows moved to a later hour): batch 1 is stale.
        conn.execute(
            "INSERT INTO services_sync.delivery_runs (dag_id, run_id, interval_start, "
            "interval_end, rows_extracted, batches, batches_posted, rows_sent, "
            "rows_quarantined, duplicates, finished_at) "
            "VALUES (%s, %s, %s, %s, 10, 1, 1, 10, 0, 0, %s)",
            (DAG_ID, run_id, start, NEWEST_END, start + timedelta(hours=3)),
        )
    [item] = _client().get("/api/intervals").json()["intervals"]
    assert (item["batches"], item["rows_delivered"], item["status"]) == (1, 10, "delivered")
    assert item["delivery_lag_s"] == 3600


def test_the_view_reads_only_and_with_bind_parameters(ledger):
    with (
        app.open_read_only("services_source_db") as conn,
        pytest.raises(psycopg.errors.ReadOnlySqlTransaction),
    ):
        conn.execute("CREATE TABLE services_sync.nope (id int)")
    with app.open_read_only("services_source_db") as conn:
        assert conn.execute("SHOW transaction_read_only").fetchone() == ("on",)
        assert conn.execute("SHOW TimeZone").fetchone() == ("UTC",)
        assert conn.execute("SHOW statement_timeout").fetchone() == ("10s",)
        rows = queries.fetch_interval_rows(conn, "services_sync")
    assert len(rows) == 48
    text = queries.status_intervals_sql("services_sync").as_string(None)
    assert "%(dag_id)s" in text and "%(window_hours)s" in text
    assert '"services_sync".delivery_ledger' in text


def test_no_state_tables_yet_is_a_message_not_an_error(source_db):
    response = _client().get("/")
    assert response.status_code == 200
    assert "The state tables do not exist yet in schema services_sync" in response.text
    data = _client().get("/api/intervals").json()
    assert data["intervals"] == []
    assert "check_run_setup" in data["problem"]


def test_an_unreachable_database_is_a_503_with_the_reason(monkeypatch, source_db):
    from devkit.pgcluster import free_port

    monkeypatch.setenv(
        "AIRFLOW_CONN_SERVICES_SOURCE_DB", f"postgresql://postgres@127.0.0.1:{free_port()}/nope"
    )
    response = _client().get("/")
    assert response.status_code == 503
    assert "The delivery ledger cannot be read" in response.text
    assert "services_source_db cannot be read" in response.text
    api = _client().get("/api/intervals")
    assert api.status_code == 503
    assert "refused" in api.json()["problem"]


def test_an_undefined_connection_is_a_503_naming_it(monkeypatch, source_db):
    monkeypatch.setenv("SERVICES_SYNC_STATE_CONN_ID", "services_state_nowhere")
    api = _client().get("/api/intervals")
    assert api.status_code == 503
    assert "services_state_nowhere" in api.json()["problem"]


# --------------------------------------------------------------------------------------------
# The plugin, as Airflow's plugin manager loads it
# --------------------------------------------------------------------------------------------


def test_airflow_loads_the_plugin_and_its_nav_entry():
    from airflow import plugins_manager

    plugins, errors = plugins_manager._get_plugins()
    assert not {path: e for path, e in errors.items() if "services_sync_status" in path}
    [plugin] = [p for p in plugins if p.name == "services_sync_status"]
    external_views, _ = plugins_manager._get_ui_plugins()
    [view] = [v for v in external_views if v.get("url_route") == "sync-status"]
    assert view["href"] == "/services-sync/"
    assert view["destination"] == "nav"
    assert view["name"] == "Sync status"
    assert view["icon"].startswith("data:image/svg+xml;base64,")
    mounted, *others = plugin.fastapi_apps
    assert mounted["url_prefix"] == "/services-sync"
    # The other DAGs (CDC, MySQL / MariaDB) each have a view of their own.
    assert [a["url_prefix"] for a in others] == [
        "/services-sync-cdc",
        "/services-sync-mysql",
        "/services-sync-mysql-cdc",
    ]
    assert {v["url_route"] for v in external_views} >= {
        "sync-status-mysql",
        "sync-status-mysql-cdc",
    }

    # Airflow's authentication guards the mounted app: no token, no ledger.
    client = TestClient(mounted["app"])
    response = client.get("/api/intervals")
    assert response.status_code == 401
    assert "intervals" not in response.json()


def test_airflow_runs_reads_states_and_failed_tasks_from_the_metadata_db(airflow_db):
    """What the API server adds to the ledger: run states, and failed tasks by name."""
    import uuid

    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import insert

    dag_id = f"status_view_{uuid.uuid4().hex[:8]}"  # no other test's runs
    start = NEWEST_END - timedelta(hours=4)
    runs = [
        ("scheduled__0", "success", start),
        ("scheduled__1", "failed", start + timedelta(hours=1)),
        ("scheduled__2", "failed", start + timedelta(hours=2)),
        ("scheduled__3", "running", start + timedelta(hours=3)),
    ]
    with create_session() as session:
        session.execute(
            insert(DagRun.__table__),
            [
                {"dag_id": dag_id, "run_id": run_id, "run_type": "scheduled", "state": state,
                 "data_interval_start": s, "data_interval_end": s + timedelta(hours=1),
                 "queued_at": s + timedelta(hours=1)}
                for run_id, state, s in runs
            ],
        )  # fmt: skip
        session.execute(
            insert(TaskInstance.__table__),
            [
                {"dag_id": dag_id, "run_id": "scheduled__1", "task_id": "post_batches",
                 "map_index": 2, "state": "failed", "try_number": 21, "pool": "default_pool"},
                {"dag_id": dag_id, "run_id": "scheduled__1", "task_id": "post_batches",
                 "map_index": 0, "state": "success", "try_number": 1, "pool": "default_pool"},
                {"dag_id": dag_id, "run_id": "scheduled__2", "task_id": "wait_for_open_transactions",
                 "map_index": -1, "state": "failed", "try_number": 1, "pool": "default_pool"},
            ],
        )  # fmt: skip

    found = queries.airflow_runs(dag_id, ["scheduled__0"], window=2)
    # The ledger's run, and the two latest by interval.
    assert set(found) == {"scheduled__0", "scheduled__2", "scheduled__3"}
    assert found["scheduled__0"].state == "success"
    assert found["scheduled__3"].state == "running"
    assert found["scheduled__3"].interval_start == start + timedelta(hours=3)
    assert found["scheduled__2"].failed_tasks == ("wait_for_open_transactions (try 1)",)

    found = queries.airflow_runs(dag_id, ["scheduled__1"], window=0)
    assert found["scheduled__1"].failed_tasks == ("post_batches lane 3 (try 21)",)
    assert found["scheduled__1"].queued_at == start + timedelta(hours=2)
