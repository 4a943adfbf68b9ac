"""What the terminal tools (the demos, ``make airflow``) share on the command line and screen.

SIGTERM unwinding like Ctrl-C (so cleanup runs), the ``--hours`` option, and paths, database
URLs and exceptions shortened for a terminal line.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit, urlunsplit

MAX_HOURS = 48
"""The most hours a tool seeds and runs: two days of hourly runs."""


def raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM handler: unwind like Ctrl-C so the ``finally`` blocks clean up."""
    raise KeyboardInterrupt


def hours_option(value: str) -> int:
    """``--hours``: a whole number of hours from 1 to :data:`MAX_HOURS` (argparse ``type``)."""
    try:
        hours = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if not 1 <= hours <= MAX_HOURS:
        raise argparse.ArgumentTypeError(f"{hours} is not between 1 and {MAX_HOURS}")
    return hours


def show_path(path: Path) -> str:
    """A path relative to the current directory when it is below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def redact(url: str) -> str:
    """A database URL without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
