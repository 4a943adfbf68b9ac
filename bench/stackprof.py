"""A small sampling profiler that sees every thread (cProfile only sees the main one).

``python -m bench.stackprof -o OUT.txt [-i 0.005] -m module [args...]`` runs ``module`` as
``__main__`` (like ``python -m``) while a daemon thread samples the stacks of all other threads
every ``-i`` seconds (``sys._current_frames``). Under ``airflow dags test`` the tasks run in the
main thread and the in-process execution API answers them from a second thread, so a profile
of the main thread alone shows the API's work only as time spent waiting on a lock.

The report lists, per thread role, the functions by *inclusive* share of that thread's samples
(a function counts once per sample if it is anywhere on the stack) and by *own* share (leaf
frame). Samples of a thread parked in ``threading``/``queue`` waits are counted as idle.
A stand-in for ``py-spy record --threads``, which is not installed here.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import runpy
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType

_IDLE_FILES = (f"{os.sep}threading.py", f"{os.sep}queue.py", f"{os.sep}selectors.py")
_SKIP = ("<frozen runpy>", f"bench{os.sep}stackprof.py")

#: Where a busy sample of the main thread goes: the first rule whose marker is on the stack.
CATEGORIES = (
    ("imports", ("<frozen importlib._bootstrap",)),
    ("services_sync: PostgreSQL round trips", ("services_sync", "psycopg")),
    ("services_sync: HTTP POST to the receiver", ("services_sync", f"http{os.sep}client.py")),
    ("services_sync: Python (transform, JSON, hashing)", ("services_sync",)),
    ("Airflow: execution API calls, client side (state, XCom, RTIF)", ("httpx",)),
    ("Airflow: other (dag.test loop, task runner, logging)", ("",)),
)


def _frames(frame: FrameType | None) -> Iterator[FrameType]:
    while frame is not None:
        yield frame
        frame = frame.f_back


def _name(frame: FrameType) -> str:
    code = frame.f_code
    path = code.co_filename
    for marker in ("site-packages" + os.sep, "plugins" + os.sep, "lib" + os.sep + "python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{code.co_firstlineno}({code.co_name})"


class Sampler(threading.Thread):
    def __init__(self, interval: float) -> None:
        super().__init__(name="bench-stackprof", daemon=True)
        self.interval = interval
        self.stop = threading.Event()
        self.samples: collections.Counter[str] = collections.Counter()
        self.idle: collections.Counter[str] = collections.Counter()
        self.inclusive: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )
        self.own: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.categories: collections.Counter[str] = collections.Counter()
        self.examples: dict[str, list[str]] = {}
        self.started = time.perf_counter()

    def run(self) -> None:
        me = threading.get_ident()
        main = threading.main_thread().ident
        while not self.stop.wait(self.interval):
            names = {t.ident: t.name for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                role = "main" if ident == main else _role(names.get(ident, "?"))
                self.samples[role] += 1
                leaf = frame
                if leaf.f_code.co_filename.endswith(_IDLE_FILES):
                    self.idle[role] += 1
                    if role == "main":
                        files = [f.f_code.co_filename for f in _frames(frame)]
                        category = _idle_category(files)
                        self.categories[category] += 1
                        if category not in self.examples:
                            self.examples[category] = [
                                _name(f)
                                for f in _frames(frame)
                                if not f.f_code.co_filename.endswith(_IDLE_FILES)
                            ][:6]
                    continue
                seen = set()
                files = []
                for f in _frames(frame):
                    files.append(f.f_code.co_filename)
                    if f.f_code.co_filename.endswith(_SKIP):
                        continue
                    name = _name(f)
                    if name not in seen:
                        seen.add(name)
                        self.inclusive[role][name] += 1
                self.own[role][_name(leaf)] += 1
                if role == "main":
                    self.categories[_category(files)] += 1

    def report(self, limit: int = 30) -> str:
        wall = time.perf_counter() - self.started
        lines = [f"wall {wall:.1f} s, one sample per thread every {self.interval * 1000:.0f} ms"]
        main = self.samples.get("main", 0)
        if main:
            lines.append("")
            lines.append(f"== main thread (runs the tasks) by category, {main} samples")
            for name, n in self.categories.most_common():
                lines.append(f"{100 * n / main:6.1f}%  {n * self.interval:7.2f} s  {name}")
            for name, stack in self.examples.items():
                lines.append(f"   e.g. {name}: " + " < ".join(stack))
        for role, total in self.samples.most_common():
            busy = total - self.idle[role]
            lines.append("")
            lines.append(
                f"== thread {role}: {total} samples, {busy} busy "
                f"({busy * self.interval:.1f} s), {self.idle[role]} idle"
            )
            if not busy:
                continue
            lines.append(f"-- inclusive (share of all {total} samples of this thread)")
            for name, n in self.inclusive[role].most_common(limit):
                lines.append(f"{100 * n / total:6.1f}%  {n * self.interval:7.2f} s  {name}")
            lines.append("-- own (leaf frame)")
            for name, n in self.own[role].most_common(limit // 2):
                lines.append(f"{100 * n / total:6.1f}%  {n * self.interval:7.2f} s  {name}")
        return "\n".join(lines) + "\n"


def _idle_category(files: list[str]) -> str:
    """Category of a sample parked in a wait (``selectors``/``threading``/``queue``)."""
    ours = any("services_sync" in f for f in files)
    if any("httpx" in f for f in files):
        return "Airflow: execution API calls, waiting on the API thread (SQLite, routes)"
    if any(f"psycopg{os.sep}" in f for f in files):
        if ours:
            return "services_sync: PostgreSQL round trips"
        return "Airflow SQL operators/sensor: PostgreSQL round trips"
    if ours:
        return "services_sync: other waits"
    return "idle: other thread waits (dag.test loop, supervisor)"


def _category(files: list[str]) -> str:
    for name, markers in CATEGORIES:
        if all(any(m in f for f in files) for m in markers):
            return name
    return CATEGORIES[-1][0]


def _role(thread_name: str) -> str:
    """Group threads by name without their counters (``Thread-N (_handle_socket_comms)``)."""
    return re.sub(r"\d+", "N", thread_name)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stackprof")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("-i", "--interval", type=float, default=0.005)
    parser.add_argument("-m", dest="module", required=True)
    args, rest = parser.parse_known_args()
    sys.argv = [args.module, *rest]
    sampler = Sampler(args.interval)
    sampler.start()
    status = 0
    try:
        runpy.run_module(args.module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sampler.stop.set()
        sampler.join(2)
        with open(args.output, "w") as out:
            out.write(sampler.report())
    return status


if __name__ == "__main__":
    sys.exit(main())
