"""services_sync: hourly change-sync of service requests to an HTTP API.

One room per concern, so a newcomer can find their way:

* ``core``: what every capture mode shares. Settings (``config``), the contract transform
  (``transform``), bodies, plans and idempotency keys (``payload``), how an answer is judged
  (``ack``) and retried (``retry``), alerts and the watchdog, the state tables and the delivery
  buffer (``state``, ``outbox``), the late-commit gate and the reconciliation rules, and the
  checks every DAG's first task runs (``checks``).
* One subpackage per capture mode: ``query`` (a PostgreSQL table read by ``last_modified_date``
  per hour), ``cdc`` (PostgreSQL logical decoding), ``mysql`` (MySQL / MariaDB: query mode and
  binlog CDC). A mode's job ends when its batches are in the outbox; its ``mode`` module is how
  the DAG and the delivery reach it.
* ``delivery``: the typed interface a mode plugs in with (``capture``), the ``HttpOperator``
  lanes that POST the outbox, and ``record_delivery``.
* ``dag_factory``: what every DAG shares (default args, alerts, params, the delivery half).
* ``ui``: the *Sync status* view the Airflow plugin ``plugins/services_sync_status.py`` serves.

Modules marked *pure* import neither Airflow nor a database driver and are unit-tested alone.

The package lives in ``plugins/`` so every Airflow component (dag-processor, scheduler, workers,
API server) has it on ``sys.path``; ``plugins/.airflowignore`` keeps Airflow's plugin loader from
importing its modules one by one as top-level plugins.
"""
