"""Throwaway PostgreSQL clusters for the demo and the tests.

Uses the server binaries bundled in the ``pgserver`` wheel (PostgreSQL 16, with ``pgoutput``), so
a machine with only Python needs nothing else; ``PG_BIN_DIR`` points at other binaries (e.g.
Debian's ``/usr/lib/postgresql/15/bin``).

We drive ``initdb``/``pg_ctl`` ourselves instead of ``pgserver.get_server()`` because the tests
need what it does not offer: a TCP port, ``wal_level=logical``, restarts mid-test and an
immediate stop. PostgreSQL refuses to run as root; as root we run it as the unprivileged user
``pgserver`` creates for the same reason (its helpers add the user and open the folders).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

_RUN_AS = "pgserver"


def _bin_dir() -> Path:
    override = os.environ.get("PG_BIN_DIR")
    if override:
        return Path(override)
    from pgserver._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresCluster:
    """A private PostgreSQL cluster on 127.0.0.1, trust auth, superuser ``postgres``.

    Example::

        with PostgresCluster(settings={"wal_level": "logical"}) as pg:
            psycopg.connect(pg.dsn())
    """

    def __init__(
        self,
        base_dir: str | Path | None = None,
        port: int | None = None,
        settings: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="services-sync-pg-"))
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "sock"
        self.log_file = self.base_dir / "postgres.log"
        self.port = port or free_port()
        self.settings = {
            "listen_addresses": "127.0.0.1",
            "fsync": "off",  # a throwaway cluster: speed over durability
            "full_page_writes": "off",
            "synchronous_commit": "off",
            "wal_level": "logical",
            "max_replication_slots": "10",
            "max_wal_senders": "10",
            "max_connections": "200",
            "max_prepared_transactions": "10",
            "timezone": "UTC",
            **(settings or {}),
        }
        self.env = env or {}
        self.bin_dir = _bin_dir()
        self._user: str | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> PostgresCluster:
        """Create the cluster on first use and start it; wait until it accepts connections."""
        self._prepare_user()
        if not (self.data_dir / "PG_VERSION").exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.socket_dir.mkdir(parents=True, exist_ok=True)
            self._chown(self.base_dir)
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            )
        self._pg_ctl("start")
        return self

    def restart(self, mode: str = "fast") -> None:
        """Restart the server (``fast`` drops open connections, like a real restart)."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop")
        self._pg_ctl("start")

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server if it runs."""
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop", check=False)

    def destroy(self) -> None:
        """Stop the server and delete its files (only a folder this object created)."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    # -- access ----------------------------------------------------------------------------
    def dsn(self, database: str = "postgres", user: str = "postgres") -> str:
        """A libpq URI for this cluster over TCP."""
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create a database and return its URI."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    # -- internals -------------------------------------------------------------------------
    def _pg_ctl(self, action: str) -> None:
        options = " ".join(f"-c {k}={v}" for k, v in self.settings.items())
        options += f" -p {self.port} -k {self.socket_dir}"
        try:
            self._run(
                "pg_ctl",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                action,
            )
        except subprocess.CalledProcessError:
            log = self.log_file.read_text() if self.log_file.exists() else "(no log)"
            raise RuntimeError(
                f"PostgreSQL failed to {action}; server log:\n{log[-3000:]}"
            ) from None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"PostgreSQL did not listen on port {self.port}")

    def _prepare_user(self) -> None:
        if os.geteuid() != 0 or self._user:
            return
        from pgserver.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists(_RUN_AS)
        self._user = _RUN_AS
        ensure_prefix_permissions(self.base_dir)
        ensure_prefix_permissions(self.bin_dir)
        import stat

        ensure_folder_permissions(
            self.bin_dir, stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
        )
        lib_dir = self.bin_dir.parent / "lib"
        if lib_dir.exists():
            ensure_folder_permissions(lib_dir, stat.S_IRGRP | stat.S_IROTH)

    def _chown(self, path: Path) -> None:
        if not self._user:
            return
        entry = pwd.getpwnam(self._user)
        for root, dirs, files in os.walk(path):
            os.chown(root, entry.pw_uid, entry.pw_gid)
            for name in dirs + files:
                os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)

    def _run(self, program: str, *args: str, check: bool = True) -> None:
        env = {**os.environ, **self.env, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        subprocess.run(
            [str(self.bin_dir / program), *args],
            check=check,
            user=self._user,
            env=env,
            cwd=self.base_dir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE if check else subprocess.DEVNULL,
        )
