"""What the receiver remembers: accepted batches, the idempotency-key index, counters.

:class:`ReceiverState` keeps them in memory behind one lock and, with a ``store_path``, mirrors
them to an append-only JSON-lines file (one line per accepted batch or served duplicate, flushed
per write) that is replayed on start, so a restarted receiver still de-duplicates keys it has
already seen. A torn last line (a crash mid-write) is cut off on load; any other bad line is an
error. ``rejected`` is a process-local counter. The fault queue is not here but in
:mod:`devkit.receiver.faults`.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

logger = logging.getLogger("devkit.receiver")

_STORE_VERSION = 1


def _utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass
class _Batch:
    idempotency_key: str
    received_at: str
    body_sha256: str
    requests: list[dict[str, Any]]
    duplicates: int = 0

    def ack(self, *, duplicate: bool) -> dict[str, Any]:
        return {
            "accepted": len(self.requests),
            "duplicate": duplicate,
            "idempotency_key": self.idempotency_key,
        }


@dataclass
class _Counters:
    duplicates: int = 0
    rejected: int = 0


@dataclass
class ReceiverState:
    """The accepted batches, their idempotency keys and the counters, guarded by one lock.

    Attributes:
        store_path: Optional JSON-lines file mirroring accepted batches and duplicates.
    """

    store_path: Path | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _batches: list[_Batch] = field(default_factory=list, repr=False)
    _by_key: dict[str, _Batch] = field(default_factory=dict, repr=False)
    _counters: _Counters = field(default_factory=_Counters, repr=False)

    def __post_init__(self) -> None:
        if self.store_path is not None:
            self._load()

    # -- persistence ------------------------------------------------------------------------

    def _load(self) -> None:
        """Replay the store file; tolerate (and cut off) a torn last line from a crash."""
        path = self.store_path
        assert path is not None
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
            return
        data = path.read_bytes()
        complete_len = data.rfind(b"\n") + 1
        if complete_len < len(data):
            logger.warning(
                "store %s: dropping a torn last line (%d bytes)", path, len(data) - complete_len
            )
            with path.open("r+b") as fh:
                fh.truncate(complete_len)
            data = data[:complete_len]
        for lineno, line in enumerate(data.decode("utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
                self._apply_event(event)
            except (ValueError, KeyError, TypeError) as exc:
                msg = f"store {path} line {lineno} is not a valid receiver event"
                raise ValueError(msg) from exc
        logger.info(
            "store %s: loaded %d batches, %d records",
            path,
            len(self._batches),
            sum(len(b.requests) for b in self._batches),
        )

    def _apply_event(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "batch":
            batch = _Batch(
                idempotency_key=event["idempotency_key"],
                received_at=event["received_at"],
                body_sha256=event["body_sha256"],
                requests=list(event["requests"]),
            )
            self._batches.append(batch)
            self._by_key[batch.idempotency_key] = batch
        elif kind == "duplicate":
            self._by_key[event["idempotency_key"]].duplicates += 1
            self._counters.duplicates += 1
        else:
            msg = f"unknown event {kind!r}"
            raise ValueError(msg)

    def _append(self, event: dict[str, Any]) -> None:
        if self.store_path is None:
            return
        line = json.dumps({"v": _STORE_VERSION, **event}, separators=(",", ":")) + "\n"
        with self.store_path.open("a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()

    # -- data -------------------------------------------------------------------------------

    def accept(
        self, key: str, body_sha256: str, records: list[dict[str, Any]]
    ) -> tuple[Literal["stored", "duplicate", "conflict"], dict[str, Any] | None]:
        """Store a validated batch unless its key was seen before.

        Args:
            key: The Idempotency-Key header.
            body_sha256: Hex sha256 of the raw request body.
            records: The validated records, in body order.

        Returns:
            The outcome and the ack to send (``None`` for a conflict).
        """
        with self._lock:
            existing = self._by_key.get(key)
            if existing is not None:
                if not hmac.compare_digest(existing.body_sha256, body_sha256):
                    return "conflict", None
                existing.duplicates += 1
                self._counters.duplicates += 1
                self._append({"event": "duplicate", "idempotency_key": key})
                return "duplicate", existing.ack(duplicate=True)
            batch = _Batch(key, _utc_now_iso(), body_sha256, records)
            self._append(
                {
                    "event": "batch",
                    "idempotency_key": key,
                    "received_at": batch.received_at,
                    "body_sha256": body_sha256,
                    "requests": records,
                }
            )
            self._batches.append(batch)
            self._by_key[key] = batch
            return "stored", batch.ack(duplicate=False)

    def count_rejected(self) -> None:
        """Count one rejected data request."""
        with self._lock:
            self._counters.rejected += 1

    def batches(self, *, include_requests: bool = True) -> list[dict[str, Any]]:
        """Accepted batches in arrival order."""
        with self._lock:
            out = []
            for b in self._batches:
                item: dict[str, Any] = {
                    "idempotency_key": b.idempotency_key,
                    "received_at": b.received_at,
                    "count": len(b.requests),
                    "body_sha256": b.body_sha256,
                    "duplicates": b.duplicates,
                }
                if include_requests:
                    item["requests"] = [dict(r) for r in b.requests]
                out.append(item)
            return out

    def records(self) -> list[dict[str, Any]]:
        """Every delivered record in arrival order, each tagged with its idempotency key."""
        with self._lock:
            return [
                {**r, "idempotency_key": b.idempotency_key}
                for b in self._batches
                for r in b.requests
            ]

    def downstream_state(self) -> list[dict[str, Any]]:
        """Latest record per (service_id, request_id), last write in arrival order wins."""
        with self._lock:
            state: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
            for b in self._batches:
                for r in b.requests:
                    state[(r["service_id"], r["request_id"])] = dict(r)
            return list(state.values())

    def stats(self) -> dict[str, int]:
        """Counters: batches, records, duplicates, rejected."""
        with self._lock:
            return {
                "batches": len(self._batches),
                "records": sum(len(b.requests) for b in self._batches),
                "duplicates": self._counters.duplicates,
                "rejected": self._counters.rejected,
            }

    def reset(self) -> None:
        """Forget all batches and counters and truncate the store file."""
        with self._lock:
            self._batches.clear()
            self._by_key.clear()
            self._counters = _Counters()
            if self.store_path is not None:
                self.store_path.write_bytes(b"")
