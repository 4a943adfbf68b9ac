"""Benchmarks of the services_requests_sync DAG: ``make bench`` (``python -m bench.run``)."""
