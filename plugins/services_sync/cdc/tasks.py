"""What each task of the CDC DAG (``services_requests_cdc``) does: its entry points.

A run captures the slot's pending changes up to the flushed end of WAL into a *window*
(staged in the state database), delivers the window in batches through the same transform,
quarantine, ``HttpOperator`` and ledger as query mode, and only after every batch was
acknowledged advances the slot past the window. A run that fails leaves the window
unfinished; the next run delivers the same staged changes in the same batches with the same
``Idempotency-Key`` (keys come from commit LSN + position), then acknowledges it.

The DAG file calls these names here; the work is in :mod:`services_sync.cdc.checks` (setup,
slot health), :mod:`services_sync.cdc.capture` (window, staging) and
:mod:`services_sync.cdc.batches` (batches, acknowledgment).
"""

from __future__ import annotations

from services_sync.cdc.batches import acknowledge_changes, build_change_batches
from services_sync.cdc.capture import capture_changes
from services_sync.cdc.checks import check_cdc_setup, check_slot_health

__all__ = [
    "acknowledge_changes",
    "build_change_batches",
    "capture_changes",
    "check_cdc_setup",
    "check_slot_health",
]
