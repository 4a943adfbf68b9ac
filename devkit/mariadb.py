"""Throwaway MariaDB servers for the MySQL demo and tests, with the binary log on.

Uses the server binaries of Debian's ``mariadb-server`` package (``mariadb-install-db`` and
``mariadbd``; ``devkit/ensure-os-packages`` installs it where it is missing, ``MARIADB_BIN_DIR``
points at others). Each server gets its own data folder and a free loopback port and is started
with ``--no-defaults``, so neither the machine's ``/etc/mysql`` settings nor a server it may
already run on 3306 take part. The binary log is on in the form binlog CDC needs (row events,
full row images and column names).

The server's own time zone is set away from UTC (``-05:00``) on purpose: the pipeline's
sessions must set theirs (``SET time_zone = '+00:00'``) and never depend on the server's.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from devkit.pgcluster import free_port

#: The user the Debian package creates; mariadbd refuses to run as root without ``--user``.
_RUN_AS = "mysql"


def _bin(name: str) -> str:
    override = os.environ.get("MARIADB_BIN_DIR")
    candidates = [Path(override)] if override else [Path("/usr/sbin"), Path("/usr/bin")]
    for folder in candidates:
        if (folder / name).exists():
            return str(folder / name)
    found = shutil.which(name)
    if found:
        return found
    raise RuntimeError(
        f"{name} not found: install the MariaDB server package (apt-get install mariadb-server, "
        "or run devkit/ensure-os-packages), or set MARIADB_BIN_DIR"
    )


def available() -> bool:
    """Whether the MariaDB server binaries are installed."""
    try:
        _bin("mariadbd")
        _bin("mariadb-install-db")
    except RuntimeError:
        return False
    return True


class MariaDBServer:
    """A private MariaDB server on 127.0.0.1, ``root`` without password over TCP, binlog on.

    Example::

        with MariaDBServer() as server:
            pymysql.connect(**server.connect_args())
    """

    def __init__(
        self,
        base_dir: str | Path | None = None,
        port: int | None = None,
        server_id: int = 7,
        options: dict[str, str] | None = None,
    ) -> None:
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="services-sync-mariadb-"))
        self.data_dir = self.base_dir / "data"
        self.socket = self.base_dir / "mariadb.sock"
        self.pid_file = self.base_dir / "mariadb.pid"
        self.log_file = self.base_dir / "mariadb.err"
        self.port = port or free_port()
        self.options = {
            "server-id": str(server_id),
            "log-bin": str(self.base_dir / "binlog"),
            "binlog-format": "ROW",
            "binlog-row-image": "FULL",
            "binlog-row-metadata": "FULL",
            "default-time-zone": "-05:00",
            "character-set-server": "utf8mb4",
            "collation-server": "utf8mb4_bin",
            "innodb-flush-log-at-trx-commit": "2",  # a throwaway server: speed over durability
            "sync-binlog": "0",
            "skip-name-resolve": "",
            **(options or {}),
        }
        self._process: subprocess.Popen | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> MariaDBServer:
        """Create the data folder on first use and start the server; wait until it answers."""
        if not (self.data_dir / "mysql").exists():
            self.base_dir.mkdir(parents=True, exist_ok=True)
            self._chown(self.base_dir)
            created = subprocess.run(
                [
                    _bin("mariadb-install-db"),
                    "--no-defaults",
                    f"--datadir={self.data_dir}",
                    *self._user_args(),
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                ],
                check=False,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            if created.returncode != 0:
                raise RuntimeError(f"mariadb-install-db failed:\n{created.stdout[-3000:]}")
        args = [
            _bin("mariadbd"),
            "--no-defaults",
            f"--datadir={self.data_dir}",
            *self._user_args(),
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--socket={self.socket}",
            f"--pid-file={self.pid_file}",
            f"--log-error={self.log_file}",
            *(f"--{k}={v}" if v else f"--{k}" for k, v in self.options.items()),
        ]
        self._process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        self._wait_ready()
        return self

    def stop(self) -> None:
        """Stop the server if this object started it (SIGTERM, then wait)."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        self._process = None

    def restart(self) -> None:
        """Stop and start again on the same port and data."""
        self.stop()
        self.start()

    def destroy(self) -> None:
        """Stop the server and delete its files (only a folder this object created)."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> MariaDBServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    # -- access ----------------------------------------------------------------------------
    def connect_args(self, database: str | None = None, user: str = "root", password: str = ""):
        """Keyword arguments of ``pymysql.connect`` for this server over TCP."""
        args: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "user": user,
            "password": password,
            "autocommit": True,
            "charset": "utf8mb4",
            "init_command": "SET time_zone = '+00:00'",
        }
        if database:
            args["database"] = database
        return args

    def connect(self, database: str | None = None, user: str = "root", password: str = ""):
        """A PyMySQL connection (autocommit, session in UTC)."""
        import pymysql

        return pymysql.connect(**self.connect_args(database, user, password))

    def airflow_uri(self, database: str, user: str = "root", password: str = "") -> str:
        """An Airflow connection (JSON) of type mysql on the wheels-only client."""
        import json

        return json.dumps(
            {
                "conn_type": "mysql",
                "host": "127.0.0.1",
                "port": self.port,
                "login": user,
                "password": password,
                "schema": database,
                "extra": {"client": "mysql-connector-python"},
            }
        )

    def create_database(self, name: str) -> str:
        """Create a database (utf8mb4, binary collation) and return its name."""
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        return name

    def execute(self, sql: str, params: Any = None, database: str | None = None) -> list[tuple]:
        """Run one statement as root (autocommit) and return its rows."""
        with self.connect(database) as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())

    def purge_binary_logs(self, timeout_s: float = 30) -> str:
        """Rotate the binary log and purge every older file, as a DBA or an expiry would.

        A file is purgeable only once the storage engine has made its transactions durable
        (MariaDB's binlog checkpoint, a second or so here): ``PURGE`` silently keeps it until
        then, so this retries until only the new current file is left. Returns its name.
        """
        self.execute("FLUSH BINARY LOGS")
        current = self.execute("SHOW MASTER STATUS")[0][0]
        deadline = time.monotonic() + timeout_s
        while True:
            self.execute("PURGE BINARY LOGS TO %s", (current,))
            if [row[0] for row in self.execute("SHOW BINARY LOGS")] == [current]:
                return current
            if time.monotonic() > deadline:
                raise RuntimeError(f"binary logs before {current} were not purged")
            time.sleep(0.2)

    # -- internals -------------------------------------------------------------------------
    def _user_args(self) -> list[str]:
        return [f"--user={_RUN_AS}"] if os.geteuid() == 0 else []

    def _chown(self, path: Path) -> None:
        """Give the folder to the server's user, and let it through every folder above.

        As root the server runs as ``mysql``, which must reach its data folder: a parent made
        by ``mkdtemp`` (pytest's ``tmp_path``, a workspace) is ``0700`` root (as
        ``devkit.pgcluster`` does for PostgreSQL's user).
        """
        if os.geteuid() != 0:
            return
        entry = pwd.getpwnam(_RUN_AS)
        os.chown(path, entry.pw_uid, entry.pw_gid)
        for parent in path.resolve().parents:
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                parent.chmod(mode | stat.S_IXOTH)

    def _wait_ready(self) -> None:
        import pymysql

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                break
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    try:
                        self.connect().close()
                        return
                    except pymysql.err.OperationalError:
                        pass
            time.sleep(0.1)
        log = self.log_file.read_text() if self.log_file.exists() else "(no log)"
        self.stop()
        raise RuntimeError(f"MariaDB did not start on port {self.port}; server log:\n{log[-3000:]}")
