"""Developer tooling: reference receiver, throwaway databases, seed data, demos, make airflow.

``receiver/`` (the reference receiver of the services-data HTTP API), ``pgcluster`` and
``mariadb`` (throwaway servers), ``seed`` (source rows), ``demo/`` (``make demo``, ``demo-cdc``,
``demo-mysql``), ``airflow_ui/`` (``make airflow``), ``airflow_stack/`` (Airflow's environment
and processes, for ``make airflow``, the operate tests and the benchmark), and what the terminal
tools share: ``workspace`` and ``terminal``.
"""
