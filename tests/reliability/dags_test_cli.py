"""``airflow dags test ...`` with the callback sink a scheduler would give its executor.

``dag.test(use_executor=True)`` (what ``airflow dags test --use-executor`` runs) processes the
executor's events like the scheduler does, but without the scheduler's callback sink. When a
task process is killed, Airflow 3.3's supervisor does not report the retry to the API server
(``UP_FOR_RETRY`` is a state the task runner is expected to send itself), so the retry comes
from the executor event ("finished with state success, but the task instance's state is
running"); for a task with an ``on_failure_callback`` that path queues a callback request and,
without a sink, crashes the whole command ("Callback sink is not ready"). The scheduler sets
``executor.callback_sink = DatabaseCallbackSink()``; so does this wrapper, before handing the
command line to Airflow's CLI. Usage: ``python dags_test_cli.py <dags test arguments>``.
"""

from __future__ import annotations

import sys

from airflow.__main__ import main
from airflow.callbacks.database_callback_sink import DatabaseCallbackSink
from airflow.executors.base_executor import BaseExecutor

if __name__ == "__main__":
    BaseExecutor.callback_sink = DatabaseCallbackSink()
    sys.argv = ["airflow", "dags", "test", *sys.argv[1:]]
    main()
