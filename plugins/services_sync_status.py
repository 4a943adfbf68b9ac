"""Airflow UI plugin: the "Sync status" view of the services_requests_sync delivery ledger.

How Airflow 3.3 wires it (the view is :mod:`services_sync.ui`; its app comes from
:func:`services_sync.ui.app.create_app`):

* ``fastapi_apps``: ``airflow/api_fastapi/app.py`` ``init_plugins()`` mounts each entry's
  ``app`` on the API server at its ``url_prefix`` (any prefix but the reserved ``/api/v2``,
  ``/ui``, ``/execution``, ``/auth``, ``/pluginsv2``), before the UI's catch-all route. Mounted
  apps share the API server's middlewares, process and Airflow configuration, but not its
  authentication: the routes here require the DAG's read permission themselves, with Airflow's
  own ``requires_access_dag`` (the UI's ``_token`` cookie is sent to the same origin).
* ``external_views``: ``airflow/plugins_manager.py`` ``_get_ui_plugins()`` keeps the views that
  have a ``url_route``; the React UI adds a nav entry for each ``destination: "nav"`` view and,
  at ``/plugin/<url_route>``, shows ``href`` in an iframe (fields: ``ExternalViewResponse`` in
  ``airflow/api_fastapi/core_api/datamodels/plugins.py``). ``nav_top_level`` puts the entry in
  the main nav rather than under a "Plugins" menu.

Every Airflow component imports this module (task runners too, for macros), so nothing heavy is
imported at module level: the FastAPI app and Airflow's API security are built on first access
of ``fastapi_apps``, which only the API server (and ``airflow plugins``) reads.
"""

from __future__ import annotations

from base64 import b64encode
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

from airflow.configuration import conf
from airflow.plugins_manager import AirflowPlugin

from services_sync.core.deadlines import RunQueuedAt
from services_sync.ui import app as status_app


def _icon(color: str) -> str:
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" '
        f'stroke="{color}" stroke-width="2" stroke-linecap="round">'
        '<path d="M4 20h16M7 16v-5M12 16V6M17 16v-8"/></svg>'
    )
    return "data:image/svg+xml;base64," + b64encode(svg.encode()).decode()


def _href(prefix: str = status_app.URL_PREFIX) -> str:
    # The iframe's src, relative to the UI's origin: under [api] base_url's path, if any.
    root = urlsplit(conf.get("api", "base_url", fallback="") or "/").path.rstrip("/")
    return f"{root}{prefix}/"


def build_app(dag_id: str = status_app.DAG_ID) -> Any:
    """The status app of one DAG, with Airflow's authentication and its read permission."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag
    from fastapi import Depends

    return status_app.create_app(
        lambda: status_app.load_report(dag_id=dag_id),
        dependencies=[
            Depends(requires_access_dag("GET", DagAccessEntity.RUN, param_dag_id=dag_id))
        ],
        login_url=lambda next_url: get_auth_manager().get_url_login(next_url=next_url),
        dag_id=dag_id,
    )


class ServicesSyncStatusPlugin(AirflowPlugin):
    """Adds "Sync status" to the Airflow UI nav: the delivery ledger, hour by hour.

    Also registers the stuck-run alert's deadline reference (:mod:`services_sync.core.deadlines`),
    which the scheduler looks up among the plugins' ``deadline_references``.
    """

    name = "services_sync_status"
    deadline_references = [RunQueuedAt]  # noqa: RUF012 - the plugin interface
    external_views = [  # noqa: RUF012 - the plugin interface is a class attribute
        {
            "name": name,
            "href": _href(prefix),
            "url_route": route,
            "destination": "nav",
            "nav_top_level": dag_id == status_app.DAG_ID,  # the others under "Plugins"
            "icon": _icon("#718096"),
            "icon_dark_mode": _icon("#e2e8f0"),
        }
        for dag_id, (prefix, name, route) in status_app.VIEWS.items()
    ]

    @cached_property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]
        """Built on first access (API server only), not at import: one app per DAG."""
        return [
            {"app": build_app(dag_id), "url_prefix": prefix, "name": name}
            for dag_id, (prefix, name, _) in status_app.VIEWS.items()
        ]
