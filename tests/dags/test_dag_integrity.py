"""Structure of every DAG file: imports, schedule, retries, docs. No database, no network."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pendulum
import pytest
import requests
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk import CronDataIntervalTimetable, CronTriggerTimetable, RetryAction
from airflow.sdk.exceptions import ParamValidationError
from airflow.serialization.encoders import coerce_to_core_timetable
from airflow.serialization.serialized_objects import DagSerialization

from services_sync.core.ack import RetryableDeliveryError, TransientDeliveryFailure, check_ack
from services_sync.core.alerts import SyncFailureNotifier
from services_sync.core.config import load_settings
from services_sync.mysql.mode import MYSQL_QUERY

ROOT = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((ROOT / "dags").glob("*.py"))
APPROVED_TAGS = {"services", "sync", "hourly", "cdc", "watchdog", "mysql"}
UTC = UTC


@pytest.fixture(scope="module")
def dagbag():
    return DagBag(dag_folder=str(ROOT / "dags"))


@pytest.fixture(scope="module")
def sync_dag(dagbag):
    return dagbag.dags["services_requests_sync"]


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_file_name_is_the_dag_id(dagbag, path):
    assert path.stem in dagbag.dags


def test_every_dag_is_documented_owned_and_tagged(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.doc_md and len(dag.doc_md) > 200, dag_id
        assert set(dag.tags) <= APPROVED_TAGS and dag.tags, dag_id
        for task in dag.tasks:
            assert task.owner and task.owner != "airflow", (dag_id, task.task_id)


def test_schedule_is_an_explicit_hourly_data_interval(sync_dag):
    # A bare "@hourly" becomes a CronTriggerTimetable with a zero-width interval in Airflow 3:
    # every [start, end) query would read nothing.
    assert isinstance(sync_dag.timetable, CronDataIntervalTimetable)
    timetable = coerce_to_core_timetable(sync_dag.timetable)  # what the scheduler runs
    interval = timetable.infer_manual_data_interval(
        run_after=pendulum.datetime(2025, 5, 14, 11, 0, tz="UTC")
    )
    assert (interval.start, interval.end) == (
        datetime(2025, 5, 14, 10, tzinfo=UTC),
        datetime(2025, 5, 14, 11, tzinfo=UTC),
    )
    first = timetable.next_dagrun_info(
        last_automated_data_interval=None, restriction=_restriction(sync_dag)
    )
    assert first.data_interval.end - first.data_interval.start == timedelta(hours=1)
    assert first.data_interval.start == load_settings().start_date


def _restriction(dag):
    from airflow.timetables.base import TimeRestriction

    return TimeRestriction(earliest=dag.start_date, latest=None, catchup=True)


def test_catches_up_in_order(sync_dag):
    # Where it starts is checked by the timetable's first interval above.
    assert sync_dag.catchup is True
    assert sync_dag.max_active_runs == 1


def test_pipeline_shape(sync_dag):
    upstream = {t.task_id: t.upstream_task_ids for t in sync_dag.tasks}
    assert upstream == {
        "check_run_setup": set(),
        "wait_for_open_transactions": {"check_run_setup"},
        "plan_batches": {"wait_for_open_transactions"},
        "build_batches": {"plan_batches"},
        "post_batches": {"build_batches"},
        "record_delivery": {"post_batches"},
        "reconcile_interval": {"record_delivery"},
    }
    # record_delivery runs whatever the lanes did: it alone alerts, naming every batch.
    assert sync_dag.get_task("record_delivery").trigger_rule == "all_done"
    assert sync_dag.get_task("reconcile_interval").retries == 0


@pytest.mark.parametrize("lanes", ["1", "4", "6"])
def test_task_instances_per_run_do_not_depend_on_the_volume(lanes):
    """The POST task is mapped over lanes, a literal list known when the DAG is parsed."""
    probe = (
        "import sys; sys.path[:0] = ['plugins']\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        "bag = DagBag(dag_folder='dags')\n"
        "for dag in bag.dags.values():\n"
        "    if 'post_batches' not in dag.task_dict: continue\n"
        "    post = dag.get_task('post_batches')\n"
        "    lanes = post.expand_input.value['lane']\n"
        "    print(dag.dag_id, len(dag.tasks) - 1 + len(lanes), lanes)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env={**os.environ, "SERVICES_SYNC_LANES": lanes},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    n = int(lanes)
    assert sorted(result.stdout.splitlines()[-4:]) == [
        f"services_requests_cdc {6 + n} {list(range(n))}",
        f"services_requests_mysql_cdc {6 + n} {list(range(n))}",
        f"services_requests_mysql_sync {6 + n} {list(range(n))}",
        f"services_requests_sync {6 + n} {list(range(n))}",
    ]


@pytest.mark.parametrize(
    "dag_id",
    [
        "services_requests_sync",
        "services_requests_cdc",
        "services_requests_mysql_sync",
        "services_requests_mysql_cdc",
    ],
)
def test_a_failed_lane_is_retried_as_the_settings_say(dagbag, dag_id):
    """What Airflow's task runner asks the POST task when a lane fails, in both DAGs.

    The decisions follow the test settings the DAG files were parsed with (conftest:
    SERVICES_SYNC_MAX_RETRY_AFTER_S=2, SERVICES_SYNC_MAX_RETRY_DELAY_S=1; the defaults are
    15 and 30 minutes), so they prove the settings reach the built task. End to end:
    tests/reliability/test_http_faults.py.
    """
    post = dagbag.dags[dag_id].get_task("post_batches")
    throttled = _lane_failure(429, "Retry-After", "3600")
    decision = post.retry_policy.evaluate(throttled, try_number=1, max_tries=post.retries)
    assert (decision.action, decision.retry_delay) == (RetryAction.RETRY, timedelta(seconds=2))
    for try_number in (1, 10):
        down = TransientDeliveryFailure.from_error(requests.ConnectionError("refused"), "batch")
        decision = post.retry_policy.evaluate(down, try_number=try_number, max_tries=post.retries)
        assert decision.action is RetryAction.RETRY
        assert timedelta(seconds=0.4) <= decision.retry_delay <= timedelta(seconds=1)


def _lane_failure(status: int, *header: str) -> TransientDeliveryFailure:
    """What a delivery lane raises for this answer (``lanes.py``: check_ack, then from_error)."""
    with pytest.raises(RetryableDeliveryError) as info:
        check_ack(status, dict([header]) if header else {}, "", 1)
    return TransientDeliveryFailure.from_error(info.value, "batch 1")


@pytest.mark.parametrize("dag_id", ["services_requests_sync", "services_requests_cdc"])
@pytest.mark.parametrize(
    ("name", "bad"),
    [("batch_size", 0), ("batch_size", "10"), ("batch_size", 50_001), ("max_batch_bytes", 1023)],
)
def test_a_run_cannot_be_given_a_batch_size_it_cannot_use(dagbag, dag_id, name, bad):
    """Airflow refuses the conf before any task runs (the trigger form shows the same rules)."""
    param = copy.deepcopy(dagbag.dags[dag_id].params.get_param(name))
    with pytest.raises(ParamValidationError):
        param.resolve(bad)
    assert copy.deepcopy(param).resolve(5_000) == 5_000


def test_every_dag_serializes_alike_on_every_parse_and_survives_a_deepcopy(dagbag):
    """The capture mode is an operator argument (``post_batches``' source).

    The dag-processor stores a new DAG version whenever the serialized DAG changes, and an
    argument it cannot encode is stored as its ``str``: an object whose ``repr`` held its
    address would make every parse a new version.
    """
    again = DagBag(dag_folder=str(ROOT / "dags"))
    for dag_id, dag in dagbag.dags.items():
        serialized = DagSerialization.to_dict(dag)
        assert serialized == DagSerialization.to_dict(again.dags[dag_id]), dag_id
        assert DagSerialization.to_dict(copy.deepcopy(dag)) == serialized, dag_id


_NO_SOCKETS = textwrap.dedent(
    """
    import sys, time
    opened = []
    def audit(event, args):
        if event in ("socket.connect", "socket.getaddrinfo") and not str(args).startswith("(<socket"):
            opened.append((event, repr(args)[:80]))
        elif event == "socket.connect":
            opened.append((event, repr(args[1])[:80]))
    sys.addaudithook(audit)
    sys.path[:0] = ["plugins"]
    started = time.perf_counter()
    import runpy
    runpy.run_path(sys.argv[1])
    print(f"parse_s={time.perf_counter() - started:.3f}")
    if opened:
        raise SystemExit(f"DAG import opened connections: {opened}")
    """
)


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_importing_the_dag_file_opens_no_connection(path, tmp_path):
    env = {
        **os.environ,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path}/does-not-exist/x.db",
        "AIRFLOW_CONN_SERVICES_SOURCE_DB": "postgresql://nobody@192.0.2.1:5432/nothing",
    }
    result = subprocess.run(
        [sys.executable, "-c", _NO_SOCKETS, str(path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "parse_s=" in result.stdout


def test_airflow_dags_report_parses_every_file(airflow_db, capsys):
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "report", "-o", "json"],
        cwd=ROOT,
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # Warnings share stdout with the report: the report is the line holding the JSON list.
    report = json.loads(next(x for x in result.stdout.splitlines() if x.startswith("[{")))
    files = {Path(r["file"]).name: r for r in report}
    assert {p.name for p in DAG_FILES} <= set(files)
    with capsys.disabled():
        for name, row in sorted(files.items()):
            print(f"\n  airflow dags report: {name} parsed in {row['duration']} ({row['dags']})")


def test_the_late_commit_gate_pokes_and_is_bounded(sync_dag):
    """Poke mode: a rescheduling sensor with retries can crash the Airflow 3.3 scheduler.

    ``ForeignKeyViolation`` on ``task_reschedule_ti_fkey`` when the scheduler's failure handling
    of the sensor races its last reschedule request (apache/airflow#71923; seen once in
    ``tests/operate/test_deadline_alert.py``). A race cannot be reproduced on demand; this keeps
    the pattern out.
    """
    settings = load_settings()
    gate = sync_dag.get_task("wait_for_open_transactions")
    assert gate.mode == "poke"
    assert gate.retries > 0  # a lost database connection is retried
    assert gate.conn_id == "services_source_db"
    assert gate.timeout >= settings.max_open_transaction.total_seconds()


def test_a_run_may_bound_the_wait_for_unrelated_writers_only_within_the_sensor_timeout(
    sync_dag, cdc_dag
):
    """Issue 13: the bound is per run; a bound past the gate's own timeout would be a lie."""
    settings = load_settings()
    param = copy.deepcopy(sync_dag.params.get_param("unrelated_wait_s"))
    longest = int(settings.max_open_transaction.total_seconds())
    for bad in (-1, longest + 1, "60"):
        with pytest.raises(ParamValidationError):
            copy.deepcopy(param).resolve(bad)
    assert copy.deepcopy(param).resolve(longest) == longest
    assert sync_dag.get_task("wait_for_open_transactions").timeout > longest
    assert "unrelated_wait_s" not in cdc_dag.params  # CDC has no late-commit gate


def test_a_stuck_run_raises_a_deadline_alert():
    """The deadline of both DAGs follows SERVICES_SYNC_RUN_DEADLINE_MIN.

    Regression: the CDC DAG had no stuck-run alert, yet a stuck CDC run is WAL piling up. The
    default (120) is checked in test_dags_test_cli, the alert itself in test_deadline_alert.
    """
    probe = (
        "import sys; sys.path[:0] = ['plugins']\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        "bag = DagBag(dag_folder='dags')\n"
        "for dag_id in ('services_requests_cdc', 'services_requests_sync'):\n"
        "    (alert,) = bag.dags[dag_id].deadline\n"
        "    print(dag_id, type(alert.reference).__name__, alert.interval, alert.callback.path)\n"
    )
    env = {**os.environ, "SERVICES_SYNC_RUN_DEADLINE_MIN": "45"}
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[-2:] == [
        f"{dag_id} RunQueuedAt 0:45:00 services_sync.core.alerts.deadline_missed"
        for dag_id in ("services_requests_cdc", "services_requests_sync")
    ]


# -- CDC mode --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cdc_dag(dagbag):
    return dagbag.dags["services_requests_cdc"]


def test_cdc_pipeline_acknowledges_only_after_every_batch_is_recorded(cdc_dag):
    assert isinstance(cdc_dag.timetable, CronDataIntervalTimetable)
    assert cdc_dag.max_active_runs == 1  # one window at a time
    assert cdc_dag.catchup is False  # a run takes all the slot holds: missed hours need no run
    upstream = {t.task_id: t.upstream_task_ids for t in cdc_dag.tasks}
    assert upstream == {
        "check_cdc_setup": set(),
        "check_slot_health": {"check_cdc_setup"},
        "capture_changes": {"check_slot_health"},
        "build_change_batches": {"capture_changes"},
        "post_batches": {"build_change_batches"},
        "record_delivery": {"capture_changes", "post_batches"},
        "acknowledge_changes": {"capture_changes", "record_delivery"},
    }
    # A failed or upstream-failed delivery must keep the slot where it is.
    assert cdc_dag.get_task("acknowledge_changes").trigger_rule == "all_success"
    assert cdc_dag.get_task("record_delivery").trigger_rule == "all_done"


def test_every_task_of_both_dags_alerts_on_failure_except_the_lanes(cdc_dag, sync_dag):
    """A failed lane does not alert: the run's record_delivery sends one alert for all of them
    (tests/dags/test_alerts_e2e.py, an outage past the retry budget is one alert)."""
    for dag in (cdc_dag, sync_dag):
        for task in dag.tasks:
            notifiers = [c for c in task.on_failure_callback or [] if callable(c)]
            kinds = {type(c) for c in notifiers}
            if task.task_id == "post_batches":
                assert kinds == set(), dag.dag_id
            else:
                assert kinds == {SyncFailureNotifier}, (dag.dag_id, task.task_id)


def test_the_watchdog_runs_from_the_start_every_quarter_hour(dagbag):
    watchdog = dagbag.dags["services_sync_watchdog"]
    assert watchdog.is_paused_upon_creation is False
    assert watchdog.catchup is False and watchdog.max_active_runs == 1
    assert isinstance(watchdog.timetable, CronTriggerTimetable)
    assert watchdog.timetable.expression == "*/15 * * * *"
    assert [t.task_id for t in watchdog.tasks] == ["check_delivery"]


# -- MySQL / MariaDB -------------------------------------------------------------------------
def test_binlog_cdc_saves_the_position_only_after_every_batch_is_recorded(dagbag):
    dag = dagbag.dags["services_requests_mysql_cdc"]
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.max_active_runs == 1 and dag.catchup is False
    upstream = {t.task_id: t.upstream_task_ids for t in dag.tasks}
    assert upstream == {
        "check_binlog_setup": set(),
        "check_binlog_retention": {"check_binlog_setup"},
        "capture_changes": {"check_binlog_retention"},
        "build_change_batches": {"capture_changes"},
        "post_batches": {"build_change_batches"},
        "record_delivery": {"post_batches", "capture_changes"},
        "acknowledge_changes": {"record_delivery", "capture_changes"},
    }
    assert dag.get_task("check_binlog_retention").retries == 0  # a purged log fails at once


def test_mysql_query_mode_reads_only_after_the_gate(dagbag):
    dag = dagbag.dags["services_requests_mysql_sync"]
    assert dag.max_active_runs == 1
    assert dag.get_task("plan_batches").upstream_task_ids == {"wait_for_open_transactions"}
    # The lanes look up newer versions of what they send on the MySQL source.
    assert dag.get_task("post_batches").partial_kwargs["source"] == MYSQL_QUERY
