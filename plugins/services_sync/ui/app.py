"""The sync status view's web app, and the report it serves.

Read by the Airflow UI plugin ``plugins/services_sync_status.py`` (the "Sync status" entry of
the nav), which mounts one app per DAG of :data:`VIEWS` in the API server: under
``/services-sync`` an HTML page with a table and a bar chart of the last 48 intervals, and the
same data as JSON at ``/services-sync/api/intervals``.

* :func:`open_read_only` opens the state database through an Airflow connection, read-only;
* :func:`load_report` reads the ledger and Airflow's run states
  (:mod:`services_sync.ui.queries`) into a :class:`~services_sync.ui.model.StatusReport`,
  turning every failure into a message;
* :func:`create_app` builds the FastAPI app that serves it (:mod:`services_sync.ui.page` draws
  the HTML, :func:`~services_sync.ui.model.report_json` the JSON).

FastAPI and Airflow are imported only when called: every Airflow component, task runners
included, imports the plugin module, which imports this one for :data:`VIEWS`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from typing import Any

import psycopg

from services_sync.core.config import ConfigError, load_settings
from services_sync.ui.model import (
    DAG_ID,
    WINDOW,
    RunInfo,
    StatusReport,
    build_intervals,
    report_json,
)
from services_sync.ui.page import render_message, render_page
from services_sync.ui.queries import airflow_runs, begin_read_only, fetch_interval_rows

log = logging.getLogger(__name__)

#: Where the plugin mounts the app in the API server, and the nav entry's route in the UI.
URL_PREFIX = "/services-sync"

#: Every DAG with a view of its own: ``dag_id -> (url prefix, nav name, url route)``. The
#: MySQL / MariaDB DAGs keep their ledger in the same state database (``dag_id`` tells them
#: apart), so each view is the same page on another DAG's rows.
VIEWS = {
    DAG_ID: (URL_PREFIX, "Sync status", "sync-status"),
    "services_requests_cdc": (f"{URL_PREFIX}-cdc", "Sync status (CDC)", "sync-status-cdc"),
    "services_requests_mysql_sync": (
        f"{URL_PREFIX}-mysql",
        "Sync status (MySQL)",
        "sync-status-mysql",
    ),
    "services_requests_mysql_cdc": (
        f"{URL_PREFIX}-mysql-cdc",
        "Sync status (MySQL CDC)",
        "sync-status-mysql-cdc",
    ),
}
#: Seconds to wait for the state database to accept a connection (unless its extra says):
#: one that does not answer must not hold an API server thread for minutes.
CONNECT_TIMEOUT_S = 5


def _http_hint(status_code: int, dag_id: str) -> str | None:
    if status_code == 401:
        return "Sign in to Airflow, then open Sync status again."
    if status_code == 403:
        return f"Reading the sync status needs permission to read the runs of DAG {dag_id}."
    return None


@cache
def _libpq_keywords() -> frozenset[str]:
    return frozenset(opt.keyword.decode() for opt in psycopg.pq.Conninfo.get_defaults())


@contextmanager
def open_read_only(conn_id: str) -> Iterator[psycopg.Connection]:
    """A read-only, UTC, time-boxed psycopg connection for an Airflow connection id.

    Why ``airflow.sdk.BaseHook.get_connection`` works here, outside any task: in Airflow 3.3
    it goes through ``airflow.sdk.execution_time.context._get_connection``, which asks the
    secrets backends that ``ensure_secrets_backend_loaded()``
    (``airflow/sdk/execution_time/supervisor.py``) picks by process context. The API server's
    entry point (``airflow/api_fastapi/main.py``) sets ``_AIRFLOW_PROCESS_CONTEXT=server``
    before anything else, which selects the server chain: ``AIRFLOW_CONN_*`` environment
    variables, the configured secrets backend and the metadata database (``MetastoreBackend``,
    i.e. Admin → Connections). Only task processes need the supervisor's execution API. Outside
    both (a test process) the fallback chain still reads environment variables.

    We build the psycopg connection ourselves rather than through ``PostgresHook.get_conn()``
    to add what a web request needs and the hook cannot be told: a connect timeout (unless the
    connection's extra sets one), a statement timeout and a read-only transaction. Extras that
    are libpq parameters (``sslmode``, ``sslrootcert``, ``options``, ...) are passed on; hook
    specific ones (``iam``, ``cursor``) are not supported here.
    """
    from airflow.sdk import BaseHook

    airflow_conn = BaseHook.get_connection(conn_id)
    params: dict[str, Any] = {
        "host": airflow_conn.host,
        "port": airflow_conn.port,
        "dbname": airflow_conn.schema,
        "user": airflow_conn.login,
        "password": airflow_conn.password,
        "connect_timeout": CONNECT_TIMEOUT_S,
        "application_name": "services-sync status view",
    }
    params.update(
        (key, value) for key, value in airflow_conn.extra_dejson.items() if key in _libpq_keywords()
    )
    conn = psycopg.connect(**{k: v for k, v in params.items() if v not in (None, "")})
    try:
        begin_read_only(conn)
        yield conn
    finally:
        conn.close()  # nothing to commit: the transaction was read-only


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def load_report(
    *,
    dag_id: str = DAG_ID,
    window: int = WINDOW,
    env: Mapping[str, str] | None = None,
    connect: Callable[[str], Any] = open_read_only,
    runs: Callable[[str, Sequence[str], int], Mapping[str, RunInfo]] | None = airflow_runs,
    now: datetime | None = None,
) -> StatusReport:
    """Read the ledger (and Airflow's run states) into a report; never raises.

    A missing schema or table is "no data yet" (the first run's ``check_run_setup`` creates
    them); a state database that cannot be reached or read, or a missing connection, is a
    report with ``available=False`` and the reason, which the app answers with a 503.
    """
    generated_at = now or datetime.now(UTC)
    try:
        settings = load_settings(env)
    except ConfigError as exc:
        return StatusReport(dag_id, generated_at, problem=str(exc), available=False)
    base = {
        "dag_id": dag_id,
        "generated_at": generated_at,
        "state_conn_id": settings.state_conn_id,
        "state_schema": settings.state_schema,
    }
    try:
        with connect(settings.state_conn_id) as conn:
            rows = fetch_interval_rows(conn, settings.state_schema, dag_id=dag_id, window=window)
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
        return StatusReport(
            **base,
            problem=(
                f"The state tables do not exist yet in schema {settings.state_schema} of "
                f"connection {settings.state_conn_id}: the first run of {dag_id} creates them "
                "(check_run_setup)."
            ),
        )
    except psycopg.errors.InsufficientPrivilege as exc:
        return StatusReport(
            **base,
            available=False,
            problem=(
                f"The role of connection {settings.state_conn_id} may not read the ledger "
                f"({_one_line(exc)}). Grant it USAGE on schema {settings.state_schema} and "
                "SELECT on its tables."
            ),
        )
    except psycopg.Error as exc:
        log.warning("Sync status: cannot read the ledger: %s", _one_line(exc))
        return StatusReport(
            **base,
            available=False,
            problem=(
                f"The state database of connection {settings.state_conn_id} cannot be read: "
                f"{_one_line(exc)}"
            ),
        )
    except Exception as exc:  # connection not defined, bad extra, ...: say so, never a 500
        log.warning("Sync status: cannot read the ledger", exc_info=True)
        return StatusReport(
            **base,
            available=False,
            problem=(
                f"Cannot read the ledger through connection {settings.state_conn_id}: "
                f"{type(exc).__name__}: {_one_line(exc)}"
            ),
        )
    notes: list[str] = []
    run_infos: Mapping[str, RunInfo] = {}
    if runs is not None:
        try:
            run_infos = runs(dag_id, [row["run_id"] for row in rows], window)
        except Exception as exc:  # the ledger alone still makes a useful view
            log.warning("Sync status: cannot read Airflow's run states", exc_info=True)
            notes.append(f"Airflow run states unavailable ({type(exc).__name__}); ledger only.")
    return StatusReport(
        **base, intervals=tuple(build_intervals(rows, run_infos, window)), notes=tuple(notes)
    )


#: Nothing but inline styles and data: images may load; framing only by the Airflow UI itself.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        "frame-ancestors 'self'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
}


def _status_code(report: StatusReport) -> int:
    """200, or 503 when the ledger could not be read (a retry may succeed)."""
    return 200 if report.available else 503


def create_app(
    report: Callable[[], StatusReport],
    *,
    dependencies: Sequence[Any] = (),
    login_url: Callable[[str], str] | None = None,
    dag_id: str = DAG_ID,
) -> Any:
    """The FastAPI app of DAG ``dag_id``'s view: ``/`` (HTML page) and ``/api/intervals`` (JSON).

    ``dependencies`` guard both routes (the plugin passes Airflow's DAG read permission);
    ``login_url(next_url)`` is where a browser without a session is sent (an API client gets
    the 401).
    """
    from fastapi import FastAPI, Request
    from fastapi.exception_handlers import http_exception_handler
    from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
    from starlette.exceptions import HTTPException

    app = FastAPI(
        title="services-sync status",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=list(dependencies),
    )

    @app.get("/", response_class=HTMLResponse)
    def status_page() -> HTMLResponse:
        result = report()
        return HTMLResponse(render_page(result), _status_code(result), SECURITY_HEADERS)

    @app.get("/api/intervals")
    def status_intervals() -> JSONResponse:
        result = report()
        return JSONResponse(report_json(result), _status_code(result), SECURITY_HEADERS)

    @app.exception_handler(HTTPException)
    async def for_browsers(request: Request, exc: HTTPException) -> Any:
        if "text/html" not in request.headers.get("accept", ""):
            return await http_exception_handler(request, exc)  # JSON, as Airflow's API
        if exc.status_code == 401 and login_url is not None:
            return RedirectResponse(login_url(str(request.url)), status_code=303)
        return HTMLResponse(
            render_message(f"{exc.status_code}: {exc.detail}", _http_hint(exc.status_code, dag_id)),
            status_code=exc.status_code,
            headers=SECURITY_HEADERS,
        )

    return app
