"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives, for the alert tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as email_policy

from aiosmtpd.controller import Controller

from devkit.pgcluster import free_port


class Inbox:
    """Messages received, parsed."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's hook name
        self.messages.append(message_from_bytes(envelope.content, policy=email_policy))
        return "250 OK"


@contextmanager
def smtp_inbox(monkeypatch) -> Iterator[Inbox]:
    """Start the server and point ``services_alerts_smtp`` and the alert recipients at it."""
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    monkeypatch.setenv(
        "AIRFLOW_CONN_SERVICES_ALERTS_SMTP",
        json.dumps(
            {
                "conn_type": "smtp",
                "host": "127.0.0.1",
                "port": controller.port,
                "extra": {
                    "disable_ssl": True,
                    "disable_tls": True,
                    "from_email": "sync@example.test",
                },
            }
        ),
    )
    monkeypatch.setenv("SERVICES_SYNC_ALERT_EMAIL_TO", "oncall@example.test")
    try:
        yield inbox
    finally:
        controller.stop()
