"""services_sync: hourly change-sync of PostgreSQL service requests to an HTTP API.

The package is deliberately split in two layers:

* pure modules (`config`, `transform`, `payload`, `delivery`) with no Airflow import, unit-tested
  on their own;
* Airflow-facing modules (`source`, `state`, `tasks`, `retry`) that the thin DAG files call,
  and `status`, the sync status view that the UI plugin ``plugins/services_sync_status.py``
  serves from the API server.

It lives in ``plugins/`` so every Airflow component (dag-processor, scheduler, workers) has it on
``sys.path``; ``plugins/.airflowignore`` keeps Airflow's plugin loader from importing its modules
one by one as top-level plugins.
"""
