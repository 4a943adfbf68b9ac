"""Alerts: a task failed for good, rows were quarantined, or a run is stuck past its deadline.

Alerts go through Airflow's notifiers, one per channel, each active only when its connection
exists, so adding a channel is adding a connection:

* e-mail: ``SmtpNotifier`` on connection ``services_alerts_smtp`` (to
  ``SERVICES_SYNC_ALERT_EMAIL_TO``);
* Slack: ``SlackWebhookNotifier`` on connection ``services_alerts_slack`` (an incoming webhook).

A channel that fails is logged and the others still fire: an alert must never hide the failure
it reports, nor fail the task that reports it.
"""

from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow.sdk import BaseNotifier
from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException

from services_sync.core.config import Settings, load_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Alert:
    """What an alert says: a title and labelled facts, rendered for each channel."""

    title: str
    facts: list[tuple[str, str]] = field(default_factory=list)

    def text(self) -> str:
        """Plain text (Slack, logs)."""
        return "\n".join([f"*{self.title}*", *(f"{k}: {v}" for k, v in self.facts)])

    def html(self) -> str:
        """A small HTML table (e-mail)."""
        rows = "".join(
            f"<tr><th align='left'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
            for k, v in self.facts
        )
        return f"<h3>{html.escape(self.title)}</h3><table>{rows}</table>"


def task_failure_alert(context: Mapping[str, Any]) -> Alert:
    """The alert for a task that failed after its last try."""
    ti = context["ti"]
    task = (
        ti.task_id
        if getattr(ti, "map_index", -1) in (-1, None)
        else f"{ti.task_id}[{ti.map_index}]"
    )
    exception = context.get("exception")
    first_line = (str(exception).strip().splitlines() or [type(exception).__name__])[0]
    return Alert(
        title=f"[services-sync] {ti.dag_id}.{task} failed",
        facts=[
            ("DAG", ti.dag_id),
            ("Task", task),
            ("Data interval", _interval(context)),
            ("Try", str(getattr(ti, "try_number", "?"))),
            ("Error", first_line[:500]),
            ("Log", str(getattr(ti, "log_url", "") or "")),
        ],
    )


def quarantine_alert(
    dag_id: str, run_id: str, interval: str, quarantined: int, log_url: str
) -> Alert:
    """The alert for rows that were not sent because they break the API contract."""
    return Alert(
        title=f"[services-sync] {quarantined} row(s) quarantined in {interval}",
        facts=[
            ("DAG", dag_id),
            ("Run", run_id),
            ("Data interval", interval),
            ("Quarantined", f"{quarantined} (see services_sync.quarantined_requests for reasons)"),
            ("Log", log_url),
        ],
    )


def deadline_alert(context: Mapping[str, Any] | None) -> Alert:
    """The alert for a run still unfinished at its deadline (a stuck sync is an incident)."""
    context = context or {}
    dag_run = context.get("dag_run") or {}
    deadline = context.get("deadline") or {}
    interval = (
        f"[{dag_run.get('data_interval_start')}, {dag_run.get('data_interval_end')})"
        if dag_run.get("data_interval_start")
        else "(none)"
    )
    return Alert(
        title=f"[services-sync] {dag_run.get('dag_id', '?')} run is not finished by its deadline",
        facts=[
            ("DAG", str(dag_run.get("dag_id", "?"))),
            ("Run", str(dag_run.get("dag_run_id") or dag_run.get("run_id") or "?")),
            ("Data interval", interval),
            ("State", str(dag_run.get("state", "?"))),
            ("Deadline", str(deadline.get("deadline_time", "?"))),
        ],
    )


def send_alert(alert: Alert, settings: Settings | None = None) -> list[str]:
    """Send through every configured channel; return the channels that accepted it."""
    # Imported here: providers are heavy and DAG parsing must not pay for them.
    from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    settings = settings or load_settings()
    sent = []
    if _has_connection(settings.alert_smtp_conn_id):
        if settings.alert_email_to:
            notifier = SmtpNotifier(
                to=list(settings.alert_email_to),
                from_email=settings.alert_email_from,
                subject=alert.title,
                html_content=alert.html(),
                smtp_conn_id=settings.alert_smtp_conn_id,
            )
            if _deliver("e-mail", notifier):
                sent.append("email")
        else:
            log.warning(
                "Connection %s exists but SERVICES_SYNC_ALERT_EMAIL_TO is empty: no e-mail sent",
                settings.alert_smtp_conn_id,
            )
    if _has_connection(settings.alert_slack_conn_id):
        notifier = SlackWebhookNotifier(
            slack_webhook_conn_id=settings.alert_slack_conn_id, text=alert.text(), timeout=30
        )
        if _deliver("Slack", notifier):
            sent.append("slack")
    if not sent:
        log.warning("Alert not sent to any channel (none configured): %s", alert.title)
    return sent


class AlreadyAlerted(AirflowFailException):
    """A task fails because an earlier task of the run failed, which already sent the alert.

    The run must fail (a green run that delivered nothing would hide the failure), but a second
    alert for the same cause is noise: :class:`SyncFailureNotifier` stays quiet for it.
    """


class SyncFailureNotifier(BaseNotifier):
    """``on_failure_callback`` of every task: alert through every configured channel."""

    template_fields = ()

    def notify(self, context: Any) -> None:
        """Send the task-failure alert (not for :class:`AlreadyAlerted`)."""
        if isinstance(context.get("exception"), AlreadyAlerted):
            log.info("No alert: %s", context["exception"])
            return
        send_alert(task_failure_alert(context))


async def deadline_missed(context: Mapping[str, Any] | None = None, **_: Any) -> None:
    """``DeadlineAlert`` callback (runs in the triggerer): alert that a run is stuck."""
    await asyncio.to_thread(send_alert, deadline_alert(context))


def _deliver(channel: str, notifier: BaseNotifier) -> bool:
    try:
        notifier.notify({})
    except Exception:
        log.exception("Sending the %s alert failed", channel)
        return False
    return True


def _has_connection(conn_id: str) -> bool:
    from airflow.sdk import BaseHook

    try:
        BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return False
    return True


def _interval(context: Mapping[str, Any]) -> str:
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is None or end is None:
        return "(none: run without a logical date)"
    return f"[{start.isoformat()}, {end.isoformat()})"
