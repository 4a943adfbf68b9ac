"""MySQL / MariaDB sources: query mode (``source``, ``tasks``) and binlog CDC (``binlog*``).

The state (plans, outbox, ledger, CDC windows) stays in PostgreSQL, as for the other modes.
"""
