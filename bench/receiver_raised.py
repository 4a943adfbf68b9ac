"""The reference receiver with its size limits raised: for labelled peer runs only.

``python -m bench.receiver_raised --port P`` is ``python -m devkit.receiver`` with the per-body
caps (10,000 records, 64 MiB) lifted to :data:`MAX_RECORDS` records and :data:`MAX_BYTES`
bytes, so the benchmark can also show what the one-POST peers would cost if the API took a
whole busy hour in one body. Results against it are labelled "raised limits" in the report;
the real receiver (and the real DAG's runs) keep the defaults.
"""

from __future__ import annotations

import sys
from typing import Annotated

from pydantic import Field

import devkit.receiver as receiver

MAX_RECORDS = 5_000_000
MAX_BYTES = 4 * 1024 * 1024 * 1024


class RaisedRequestBatch(receiver.RequestBatch):
    """``RequestBatch`` with room for :data:`MAX_RECORDS` records."""

    requests: Annotated[list[receiver.ServiceRequestRecord], Field(max_length=MAX_RECORDS)]


def main(argv: list[str] | None = None) -> int:
    return receiver.main(argv, batch_model=RaisedRequestBatch, max_body_bytes=MAX_BYTES)


if __name__ == "__main__":
    sys.exit(main())
