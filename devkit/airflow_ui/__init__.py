"""The real Airflow UI on this repository's DAG, with data to sync: ``make airflow``.

Run it with ``make airflow`` or ``python -m devkit.airflow_ui [--port N] [--hours N]
[--receiver-port N] [--home DIR] [--executor local|celery]``. Airflow's environment and
processes come from :mod:`devkit.airflow_stack`, as in the operate tests and the benchmark. It:

1. wipes and recreates its workspace (default ``.airflow/`` in the repository, gitignored; a
   directory is only wiped if it is the default one, is empty or carries the marker file an
   earlier run left there) and drops inherited ``AIRFLOW__*``, ``AIRFLOW_CONN_*``,
   ``AIRFLOW_VAR_*``, ``AIRFLOW_HOME`` and ``AIRFLOW_CONFIG`` variables and the
   ``SERVICES_SYNC_*`` settings that say where the DAG reads, writes and sends;
2. starts a throwaway PostgreSQL cluster (:mod:`devkit.pgcluster`, in ``.airflow/pg``) with
   the Airflow metadata database ``airflow`` and the source database ``services``, or uses
   ``SOURCE_DB_URL`` as the source (same rules as ``make demo``: it only adds to an empty
   ``service_requests`` unless ``DEMO_FORCE=1``);
3. seeds ``service_requests`` with :func:`devkit.seed.demo_changes` for the last ``N`` whole
   hours (default 3), three malformed rows included;
4. starts the reference receiver (:class:`devkit.receiver.ReceiverServer`) on
   ``127.0.0.1:8000``, or a free port if 8000 is taken;
5. runs ``airflow standalone`` (scheduler, dag-processor, triggerer, api-server, LocalExecutor)
   with the DAG's start date ``N`` hours ago on the hour; once the DAGs are parsed it unpauses
   the query-mode DAG only (the CDC DAG stays paused: both on would send every change twice,
   under different keys), so the scheduler catches up ``N`` runs at once. Its output goes to
   ``.airflow/standalone.log``. With ``--executor celery`` (``make airflow EXECUTOR=celery``)
   it starts a private ``redis-server`` and the Celery deployment of ``docker-compose.yaml``
   instead (api-server, scheduler, dag-processor, triggerer and one Celery worker, CeleryExecutor,
   logs in ``.airflow/<component>.log``);
6. writes ``.airflow/airflow.env``, the environment of the stack as shell exports, so the
   Airflow CLI reaches this stack (``make airflow-cli ARGS='dags list-runs ...'``);
7. prints the URL (``http://localhost:8080``, or a free port if 8080 is taken), the login
   (``admin`` / ``admin``), the CLI command and then one line per DAG run state change;
8. on Ctrl-C (or SIGTERM) stops ``airflow standalone`` (SIGINT, then SIGTERM to its process
   group, then SIGKILL; each Celery component gets SIGTERM instead), Redis, the receiver and
   PostgreSQL, and deletes the cluster's data; the logs stay in ``.airflow/``.

The exit status is 0 after Ctrl-C, 1 if Airflow stopped by itself or never became healthy, 2 if
the setup failed.

The command line and those steps are in ``__main__``; the workspace, ports and environment in
:mod:`~devkit.airflow_ui.environment`; what it starts and stops in :mod:`~devkit.airflow_ui.stack`;
unpausing the DAG and following its runs in :mod:`~devkit.airflow_ui.watch`.
"""
