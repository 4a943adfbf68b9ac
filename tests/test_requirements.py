"""What ships: the runtime pins hold no development tool (they go into production images)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEV_ONLY = {"pgserver", "pytest", "pytest-timeout", "ruff", "hypothesis", "aiosmtpd", "libfaketime"}


def pinned(path: Path) -> set[str]:
    return {
        m.group(1).lower()
        for line in path.read_text().splitlines()
        if (m := re.match(r"^([A-Za-z0-9_.\-]+)==", line))
    }


def test_runtime_requirements_hold_no_development_tool():
    assert pinned(ROOT / "requirements.txt") & DEV_ONLY == set()


def test_development_tools_are_pinned_for_make_install():
    assert pinned(ROOT / "requirements-dev.txt") >= DEV_ONLY
