"""Run a command as a child process and measure it: wall time, peak RSS, exit status.

Peak RSS comes from two sources that agree within sampling error:

* ``wait4()``'s ``ru_maxrss``: the kernel's high-water mark of the largest process among the
  child and the descendants it waited for (exact, but no name attached);
* a psutil sampler that walks the process tree every ``interval`` seconds and remembers, per
  process, its largest RSS (names the process, and sees children that are never waited for).

The larger of the two is reported as the peak RSS of the largest process.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

MIB = 1024 * 1024


@dataclass
class ProcStats:
    """What one measured command did.

    Attributes:
        argv: The command.
        returncode: Its exit status (negative: killed by that signal; None: timed out).
        wall_s: Wall time from spawn to exit.
        peak_rss: Peak RSS in bytes of the largest single process of the tree.
        peak_rss_tree: Peak of the summed RSS of all processes of the tree (sampled).
        largest: Command line of the process that had ``peak_rss`` (sampled).
        processes: How many distinct processes the sampler saw.
        samples: How many samples were taken.
        timed_out: Whether the command was killed for running too long.
    """

    argv: list[str]
    returncode: int | None = None
    wall_s: float = 0.0
    peak_rss: int = 0
    peak_rss_tree: int = 0
    largest: str = ""
    processes: int = 0
    samples: int = 0
    timed_out: bool = False
    per_process: dict[int, tuple[str, int]] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def peak_rss_mb(self) -> float:
        return self.peak_rss / MIB


class _Sampler(threading.Thread):
    def __init__(self, pid: int, interval: float, stats: ProcStats) -> None:
        super().__init__(name=f"rss-sampler-{pid}", daemon=True)
        self.pid = pid
        self.interval = interval
        self.stats = stats
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self.stop.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            total = 0
            for proc in procs:
                try:
                    rss = proc.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
                total += rss
                name, best = self.stats.per_process.get(proc.pid, ("", 0))
                if rss > best:
                    if not name:
                        with contextlib.suppress(psutil.Error):
                            name = " ".join(proc.cmdline())[:160]
                    self.stats.per_process[proc.pid] = (name, rss)
            self.stats.peak_rss_tree = max(self.stats.peak_rss_tree, total)
            self.stats.samples += 1
            self.stop.wait(self.interval)


def run_measured(
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    log_path: Path | None = None,
    stdout_path: Path | None = None,
    timeout: float = 3600.0,
    interval: float = 0.05,
) -> ProcStats:
    """Run ``argv`` to completion, sampling the RSS of its process tree.

    Args:
        argv: The command.
        env: Its environment.
        cwd: Its working directory.
        log_path: Where its stderr (and stdout, unless ``stdout_path``) goes; discarded if None.
        stdout_path: Where its stdout goes, if apart from the log.
        timeout: Seconds after which the whole process group is killed.
        interval: Sampling period in seconds.

    Returns:
        The measurements; never raises for a failing command.
    """
    stats = ProcStats(argv=list(argv))
    with contextlib.ExitStack() as stack:
        log = stack.enter_context(log_path.open("wb")) if log_path else subprocess.DEVNULL
        out = stack.enter_context(stdout_path.open("wb")) if stdout_path else log
        started = time.perf_counter()
        proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=out, stderr=log, start_new_session=True
        )
        sampler = _Sampler(proc.pid, interval, stats)
        sampler.start()
        deadline = started + timeout
        rusage = None
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                stats.wall_s = time.perf_counter() - started
                stats.returncode = os.waitstatus_to_exitcode(status)
                proc.returncode = stats.returncode
                break
            if time.perf_counter() > deadline:
                stats.timed_out = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)
            time.sleep(0.01)
        sampler.stop.set()
        sampler.join(5)
        if stats.timed_out:
            stats.returncode = None
    # Children the child never waited for are gone with the session; wait4 covers the rest.
    stats.processes = len(stats.per_process)
    best_pid = max(stats.per_process, key=lambda p: stats.per_process[p][1], default=None)
    sampled = stats.per_process[best_pid][1] if best_pid is not None else 0
    stats.largest = stats.per_process[best_pid][0] if best_pid is not None else ""
    kernel = rusage.ru_maxrss * 1024 if rusage is not None else 0  # KiB on Linux
    stats.peak_rss = max(sampled, kernel)
    return stats
