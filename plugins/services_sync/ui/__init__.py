"""The sync status view that the UI plugin ``plugins/services_sync_status.py`` mounts.

* :mod:`~services_sync.ui.model`: what the view shows and the status rules (no I/O);
* :mod:`~services_sync.ui.queries`: reading the delivery ledger and Airflow's runs;
* :mod:`~services_sync.ui.page` and ``templates/``: the HTML page, its CSS and SVG chart;
* :mod:`~services_sync.ui.app`: the read-only connection, the report and the FastAPI app.
"""
