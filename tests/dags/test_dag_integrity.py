"""Structure of every DAG file: imports, schedule, retries, docs. No database, no network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pendulum
import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.providers.http.operators.http import HttpOperator
from airflow.sdk import CronDataIntervalTimetable, CronTriggerTimetable
from airflow.serialization.encoders import coerce_to_core_timetable

from services_sync.alerts import SyncFailureNotifier
from services_sync.config import load_settings
from services_sync.retry import DeliveryRetryPolicy
from services_sync.sql import load_sql, placeholders

ROOT = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((ROOT / "dags").glob("*.py"))
APPROVED_TAGS = {"services", "sync", "hourly", "cdc", "watchdog"}
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
    assert load_settings({}).catchup is True
    assert sync_dag.catchup is True
    assert sync_dag.max_active_runs == 1
    assert sync_dag.start_date == load_settings().start_date


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
    assert sorted(result.stdout.splitlines()[-2:]) == [
        f"services_requests_cdc {6 + n} {list(range(n))}",
        f"services_requests_sync {6 + n} {list(range(n))}",
    ]


def test_post_batches_retries_with_backoff_timeout_and_policy(sync_dag):
    post = sync_dag.get_task("post_batches")
    assert issubclass(post.operator_class, HttpOperator)
    kwargs = post.partial_kwargs
    # conftest shortens the delays for the fault tests; the defaults are checked in test_config.
    assert kwargs["retries"] == 3
    assert kwargs["retry_exponential_backoff"] == 2.0
    assert kwargs["max_retry_delay"] == timedelta(seconds=1)
    assert kwargs["extra_options"] == {"timeout": 5.0, "check_response": False}
    assert isinstance(kwargs["retry_policy"], DeliveryRetryPolicy)
    assert kwargs["http_conn_id"] == "services_api"
    assert kwargs["endpoint"] == "/services-data/requests"
    assert kwargs.get("deferrable", False) is False  # deferrable mode drops retry_args
    assert kwargs["on_failure_callback"] == []  # record_delivery sends the run's one alert


def test_post_batch_timeout_defaults_to_30_seconds():
    assert load_settings({}).http_timeout == 30.0


def test_batch_size_is_a_validated_param(sync_dag):
    param = sync_dag.params.get_param("batch_size")
    assert param.value == 1000
    assert param.schema["type"] == "integer"
    assert param.schema["minimum"] == 1
    assert param.description


def test_sql_operators_use_the_source_connection_and_bind_parameters(sync_dag):
    plan = sync_dag.get_task("plan_batches")
    assert plan.conn_id == "services_source_db"
    assert plan.sql == load_sql("plan_batches.sql")  # resolved from include/sql at parse time
    assert (
        placeholders(plan.sql)
        == set(plan.parameters)
        == {"window_start", "window_end", "batch_size", "max_batch_bytes"}
    )
    assert "{{" not in plan.sql  # values are bind parameters, never rendered into the SQL


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
    assert (
        placeholders(gate.sql)
        == set(gate.parameters)
        == {
            "window_end",
            "clock_skew_s",
            "unrelated_wait_s",
        }
    )
    assert gate.parameters["unrelated_wait_s"] == "{{ params.unrelated_wait_s }}"


def test_the_gate_bounds_its_wait_for_unrelated_writers_with_a_param(sync_dag, cdc_dag):
    """Issue 13: an unrelated long writer must not fail every run; the bound is per run."""
    settings = load_settings()
    param = sync_dag.params.get_param("unrelated_wait_s")
    assert param.value == 300 == settings.unrelated_writer_wait.total_seconds()
    assert param.schema["type"] == "integer"
    assert param.schema["minimum"] == 0
    # The sensor's timeout leaves room for the longest bound a run may ask for.
    assert param.schema["maximum"] == settings.max_open_transaction.total_seconds()
    assert sync_dag.get_task("wait_for_open_transactions").timeout > param.schema["maximum"]
    assert param.schema.get("title") and param.description
    assert "unrelated_wait_s" not in cdc_dag.params  # CDC has no late-commit gate


def test_a_stuck_run_raises_a_deadline_alert():
    """The deadline follows SERVICES_SYNC_RUN_DEADLINE_MIN (default 120: see test_dags_test_cli)."""
    probe = (
        "import sys; sys.path[:0] = ['plugins']\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        "dag = DagBag(dag_folder='dags').dags['services_requests_sync']\n"
        "(alert,) = dag.deadline\n"
        "print(type(alert.reference).__name__, alert.interval, alert.callback.path)\n"
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
    assert result.stdout.splitlines()[-1] == (
        "RunQueuedAt 0:45:00 services_sync.alerts.deadline_missed"
    )


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


def test_cdc_posts_with_the_same_lanes_and_retry_budget_as_query_mode(cdc_dag, sync_dag):
    cdc_kwargs = cdc_dag.get_task("post_batches").partial_kwargs
    sync_kwargs = sync_dag.get_task("post_batches").partial_kwargs
    for name in (
        "retries",
        "retry_exponential_backoff",
        "max_retry_delay",
        "extra_options",
        "lanes",
    ):
        assert cdc_kwargs[name] == sync_kwargs[name], name
    assert isinstance(cdc_kwargs["retry_policy"], DeliveryRetryPolicy)
    # Query mode drops records a later interval supersedes; a CDC window has no later window.
    assert (sync_kwargs["drop_superseded"], cdc_kwargs.get("drop_superseded", False)) == (
        True,
        False,
    )
    assert cdc_dag.params.get_param("initial_snapshot").value is False


def test_both_dags_alert_on_a_stuck_run_with_the_same_defaults(cdc_dag, sync_dag):
    """Regression: the CDC DAG had no stuck-run alert, yet a stuck CDC run is WAL piling up."""
    for dag in (cdc_dag, sync_dag):
        (alert,) = dag.deadline
        assert alert.interval == timedelta(minutes=120), dag.dag_id
        assert alert.callback.path == "services_sync.alerts.deadline_missed"
        args = dict(dag.default_args)
        assert isinstance(args.pop("on_failure_callback"), SyncFailureNotifier), dag.dag_id
        assert args == {
            "owner": "data-platform",
            "retries": 1,
            "retry_delay": timedelta(seconds=0.5),
        }
    for name in ("batch_size", "max_batch_bytes"):
        assert cdc_dag.params.get_param(name).schema == sync_dag.params.get_param(name).schema
        assert cdc_dag.params.get_param(name).schema.get("title"), name


def test_the_watchdog_runs_from_the_start_every_quarter_hour(dagbag):
    watchdog = dagbag.dags["services_sync_watchdog"]
    assert watchdog.is_paused_upon_creation is False
    assert watchdog.catchup is False and watchdog.max_active_runs == 1
    assert isinstance(watchdog.timetable, CronTriggerTimetable)
    assert watchdog.timetable.expression == "*/15 * * * *"
    assert [t.task_id for t in watchdog.tasks] == ["check_delivery"]
