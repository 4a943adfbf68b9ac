"""Peer (b), the naive DAG: one query returns every row of the hour via XCom into one POST.

What an Airflow user writes first: ``SQLExecuteQueryOperator`` pushes the whole interval to
XCom, and one ``HttpOperator`` renders it into a single JSON body. Memory grows with the hour
(the rows are held as XCom, then as Python objects, then as one body string), and one body per
hour runs into the receiver's limits (10,000 records, 64 MiB) once the hour is busy.

Only for the benchmark (``bench/run.py`` runs it with ``airflow dags test`` from its own DAGs
folder); it is not part of the project.
"""

from __future__ import annotations

import json
import os

import pendulum
from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator
from airflow.providers.http.operators.http import HttpOperator
from airflow.sdk import CronDataIntervalTimetable, dag

FIELDS = ("service_id", "request_id", "opening_date", "status_id", "last_modified_date")

EXTRACT_SQL = """
SELECT service_id,
       request_id,
       to_char(opening_date AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
       status_id::int,
       to_char(last_modified_date AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
FROM service_requests
WHERE last_modified_date >= %(start)s::timestamptz
  AND last_modified_date < %(end)s::timestamptz
ORDER BY last_modified_date
"""


def as_body(rows: list[list]) -> str:
    """Jinja filter: the XCom rows as the API's JSON body."""
    return json.dumps({"requests": [dict(zip(FIELDS, row, strict=True)) for row in rows or []]})


@dag(
    dag_id="services_requests_naive",
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=pendulum.parse(os.environ.get("SERVICES_SYNC_START_DATE", "2026-01-01T00:00:00Z")),
    catchup=False,
    user_defined_filters={"as_body": as_body},
    tags=["bench", "peer"],
)
def services_requests_naive():
    extract_interval = SQLExecuteQueryOperator(
        task_id="extract_interval",
        conn_id="services_source_db",
        sql=EXTRACT_SQL,
        parameters={"start": "{{ data_interval_start }}", "end": "{{ data_interval_end }}"},
    )
    post_interval = HttpOperator(
        task_id="post_interval",
        http_conn_id="services_api",
        endpoint="/services-data/requests",
        method="POST",
        data="{{ ti.xcom_pull(task_ids='extract_interval') | as_body }}",
        headers={
            "Content-Type": "application/json",
            "Idempotency-Key": "naive:{{ data_interval_start }}",
        },
        extra_options={"timeout": 600},
    )
    extract_interval >> post_interval


services_requests_naive()
