"""Query mode on PostgreSQL: the rows whose ``last_modified_date`` falls in the run's hour.

The late-commit gate (``core.gate``) makes the hour safe to read; the reconciliation
(``core.reconcile``) proves afterwards that nothing in it was missed.
"""
