"""The demos: the real DAGs, run with ``dag.test()`` against throwaway services, then checked.

- ``make demo`` (``python -m devkit.demo``): the query-mode DAG for a few hours,
  :mod:`devkit.demo.query`, with its report in :mod:`devkit.demo.report`;
- ``make demo-cdc`` (``python -m devkit.demo.cdc``): the PostgreSQL CDC DAG, :mod:`devkit.demo.cdc`;
- ``make demo-mysql`` (``python -m devkit.demo.mysql``): both MySQL / MariaDB DAGs,
  :mod:`devkit.demo.mysql`.

What they share: the workspace, environment, source database, receiver, exit statuses and
cleanup (:mod:`devkit.demo.services`), running Airflow in-process (:mod:`devkit.demo.airflow_runs`)
and, for the two change-stream demos, the rows they write, the line per run and the comparison
of the receiver with the table (:mod:`devkit.demo.changes`).
"""
