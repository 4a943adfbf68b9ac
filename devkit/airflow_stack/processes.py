"""Finding the processes a stack started, however deep they are, from ``/proc``.

Airflow puts every task process in a process group of its own (``os.setpgid`` in the task
supervisor), and ``setproctitle`` overwrites the memory ``/proc/<pid>/environ`` reads, so neither
the process group nor an environment marker finds all descendants. The working directory does:
every process of a stack is started in a directory of its own
(:attr:`devkit.airflow_stack.AirflowStack.workdir`) and Airflow never changes directory, so a
process whose ``/proc/<pid>/cwd`` is that directory was started by that stack.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessInfo:
    """A running process started by the stack."""

    pid: int
    pgid: int
    cmdline: str


def group_alive(pgid: int) -> bool:
    """Whether a non-zombie process of process group ``pgid`` still runs."""
    for pid in _pids():
        state, group = _stat(pid)
        if group == pgid and state not in {"Z", "X", ""}:
            return True
    return False


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _stat(pid: int) -> tuple[str, int]:
    """``(state, pgid)`` of a process, ``("", -1)`` if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return "", -1
    return fields[0], int(fields[2])


def processes_in(workdir: Path, *, subdirectories: bool = False) -> list[ProcessInfo]:
    """Running processes (zombies excluded) whose working directory is ``workdir``.

    With ``subdirectories``, also those whose working directory is below ``workdir``.
    """
    found = []
    target = str(workdir.resolve())
    for pid in _pids():
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            if cwd != target and not (subdirectories and cwd.startswith(target + os.sep)):
                continue
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        state, pgid = _stat(pid)
        if state in {"Z", "X", ""}:
            continue
        text = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
        found.append(ProcessInfo(pid, pgid, text))
    return found
