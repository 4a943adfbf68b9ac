"""``python -m devkit.airflow_ui``: start the stack, follow its runs until Ctrl-C, stop it all.

See :mod:`devkit.airflow_ui` for what it does, step by step.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from devkit.airflow_stack import DAG_ID, StackError, health, is_healthy
from devkit.airflow_ui.environment import (
    DEFAULT_HOME,
    PASSWORD,
    USERNAME,
    airflow_environment,
    clean_environment,
    pick_port,
    prepare_home,
    write_cli_env,
)
from devkit.airflow_ui.stack import STARTUP_TIMEOUT_S, Stack
from devkit.airflow_ui.watch import follow_runs, tail, unpause_query_mode
from devkit.demo.services import seed_source
from devkit.terminal import hours_option, raise_keyboard_interrupt, show_path
from devkit.workspace import SetupError, add_repository_to_sys_path, use_private_runtime_dir

DEFAULT_PORT = 8080
DEFAULT_RECEIVER_PORT = 8000
DEFAULT_HOURS = 3
EXECUTORS = ("local", "celery")


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number")
    return port


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (see :mod:`devkit.airflow_ui`)."""
    parser = argparse.ArgumentParser(
        prog="python -m devkit.airflow_ui",
        description="Run the Airflow UI (airflow standalone) on this repository's DAG, with an "
        "embedded PostgreSQL, seeded changes and the reference receiver. Ctrl-C stops it all.",
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=None,
        help=f"port of the UI and API (default: $AIRFLOW_UI_PORT, else {DEFAULT_PORT} or a free "
        "port if it is taken; 0 = any free port)",
    )
    parser.add_argument(
        "--receiver-port",
        type=_port,
        default=None,
        help=f"port of the reference receiver (default {DEFAULT_RECEIVER_PORT} or a free port "
        "if it is taken; 0 = any free port)",
    )
    parser.add_argument(
        "--hours",
        type=hours_option,
        default=DEFAULT_HOURS,
        help=f"whole past hours to seed and catch up (default {DEFAULT_HOURS})",
    )
    parser.add_argument(
        "--home",
        type=Path,
        default=DEFAULT_HOME,
        help="workspace, wiped on start (default: .airflow/ in the repository)",
    )
    parser.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="local: airflow standalone (LocalExecutor, the default); celery: a private "
        "redis-server, the api-server, scheduler, dag-processor, triggerer and a Celery worker",
    )
    args = parser.parse_args(argv)
    if args.port is None and os.environ.get("AIRFLOW_UI_PORT", "").strip():
        try:
            args.port = _port(os.environ["AIRFLOW_UI_PORT"].strip())
        except argparse.ArgumentTypeError as exc:
            parser.error(f"AIRFLOW_UI_PORT: {exc}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Start everything, print how to log in, follow the runs until Ctrl-C, stop everything."""
    args = parse_args(argv)
    with contextlib.suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(errors="replace", line_buffering=True)  # type: ignore[union-attr]
    # Ctrl-C and SIGTERM unwind through the cleanup below. Installing the handler also matters
    # when this process was started with SIGINT ignored (a background job of a script): it
    # would pass that on to `airflow standalone`, which then could not be stopped with SIGINT.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    stack: Stack | None = None
    status = 0
    try:
        home = prepare_home(args.home)
        clean_environment()
        use_private_runtime_dir(home)
        add_repository_to_sys_path()  # services_sync, for the seed
        stack = Stack(home, args.executor)
        now = datetime.now(UTC)
        first_hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=args.hours)
        print(
            f"services-sync on Airflow: {args.hours} hourly run(s) to catch up from "
            f"{first_hour:%Y-%m-%dT%H:%MZ}, workspace {show_path(home)}/"
        )
        api_port = pick_port(args.port, DEFAULT_PORT, "Airflow UI")
        receiver_port = pick_port(args.receiver_port, DEFAULT_RECEIVER_PORT, "receiver")

        stack.start_postgres()
        print(f"PostgreSQL   metadata DB {stack.metadata_url}")
        print(
            "             source DB "
            + ("SOURCE_DB_URL" if stack.external_source else stack.source_url)
        )
        inserted, malformed = seed_source(
            stack.source_url, first_hour, args.hours, external=stack.external_source
        )
        print(f"seeded       {inserted} changed rows ({malformed} malformed on purpose)")
        stack.start_receiver(receiver_port)
        print(f"receiver     {stack.receiver.url}  (GET /inspect/stats, /inspect/batches)")
        stack.start_broker()
        if stack.broker_url:
            print(f"redis        {stack.broker_url}  (the Celery broker)")

        env = airflow_environment(
            home,
            metadata_url=stack.metadata_url,
            source_url=stack.source_url,
            receiver_port=stack.receiver.port,
            api_port=api_port,
            start_date=first_hour,
            broker_url=stack.broker_url,
        )
        if stack.external_source:
            # The CDC DAG must not leave a replication slot (which keeps WAL) on a database
            # this command does not own: without one it fails, naming `make cdc-setup`.
            env["SERVICES_SYNC_CDC_CREATE_SLOT"] = "off"
        else:
            import psycopg

            with psycopg.connect(stack.source_url, autocommit=True) as conn:
                # What CDC mode needs of the table (README, CDC mode); the slot goes with the
                # embedded cluster.
                conn.execute("ALTER TABLE service_requests REPLICA IDENTITY FULL")
        if stack.executor == "local":
            what = f"airflow standalone (log: {show_path(stack.log_path)})"
        else:
            what = f"{', '.join(stack.components)} (logs: {show_path(home)}/<name>.log)"
        print(f"starting     {what} … ", end="", flush=True)
        started = time.monotonic()
        stack.start_airflow(env)
        api_url = f"http://127.0.0.1:{api_port}"
        while not is_healthy(health(api_url)):
            exited = stack.exited()
            if exited is not None:
                print("failed")
                print(f"airflow {exited.name} exited", file=sys.stderr)
                print(tail(exited.log_path), file=sys.stderr)
                return 1
            if time.monotonic() - started > STARTUP_TIMEOUT_S:
                print("failed")
                print(
                    f"Airflow did not become healthy in {STARTUP_TIMEOUT_S} s; see "
                    f"{show_path(stack.log_path)}",
                    file=sys.stderr,
                )
                return 1
            time.sleep(1)
        unpause_query_mode(stack.airflow)
        env_file = write_cli_env(home, env)
        print(f"ready ({time.monotonic() - started:.0f} s)")
        print()
        print(f"  Airflow UI   http://localhost:{api_port}")
        print(f"  login        {USERNAME} / {PASSWORD}")
        print(f"  DAG          http://localhost:{api_port}/dags/{DAG_ID} (CDC DAG paused)")
        print(f"  receiver     {stack.receiver.url}/inspect/stats")
        print(f"  CLI          make airflow-cli ARGS='dags list-runs {DAG_ID}'")
        print(f"               (or: set -a; source {show_path(env_file)}; set +a; airflow ...)")
        print("  stop         Ctrl-C (stops Airflow, the receiver and PostgreSQL)")
        print()
        exited = follow_runs(stack)
        print(f"\nairflow {exited.name} stopped by itself; see " + show_path(exited.log_path))
        print(tail(exited.log_path), file=sys.stderr)
        status = 1
    except (SetupError, StackError) as exc:
        print(f"\ncould not start: {exc}", file=sys.stderr)
        status = 2
    except KeyboardInterrupt:
        print("\nstopping Airflow, the receiver and PostgreSQL …")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if stack is not None:
            killed = stack.stop()
            if killed:
                print("killed what did not stop in time: " + "; ".join(killed), file=sys.stderr)
            print(f"stopped; logs in {show_path(stack.home)}/")
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return status


if __name__ == "__main__":
    sys.exit(main())
