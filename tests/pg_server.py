"""A real PostgreSQL server for the tests: ``ALIKASSA_TEST_DSN``, or a throwaway cluster.

The throwaway cluster is built from the Debian ``postgresql`` binaries
(``/usr/lib/postgresql/<version>/bin``) in a temporary directory, listens on
127.0.0.1 on a free port (and a unix socket in the same directory), and is
stopped and deleted at the end. ``initdb`` refuses to run as root, so as root
the cluster runs as an unprivileged user (``postgres`` if it exists, else
``nobody``). In CI (``CI=true``) a missing server is a failure, never a skip.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg  # the dev extra installs it (extra "postgres")
import pytest


def _binaries() -> Path | None:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name)
    )
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Cluster:
    """A PostgreSQL cluster the tests own: start, stop (any mode), kill, start again."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="alikassa-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = _free_port()
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = "postgres"
            try:
                pwd.getpwnam(self.user)
            except KeyError:
                self.user = "nobody"
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        os.chmod(self.root, 0o755)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "alikassa",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-instructions",
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root}'\nmax_connections = 200\n"
                "shared_buffers = 32MB\n"
            )

    @property
    def dsn(self) -> str:
        return f"postgresql://alikassa@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / tool), *args]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        return subprocess.run(
            command, check=check, capture_output=True, text=True, timeout=120, cwd=self.root
        )

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """``mode="immediate"`` is a crash: no checkpoint, recovery from WAL on start."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def server() -> Iterator[tuple[str, Cluster | None]]:
    """``(dsn, cluster)``: the cluster is ``None`` for an outside ``ALIKASSA_TEST_DSN``."""
    outside = os.environ.get("ALIKASSA_TEST_DSN")
    if outside:
        yield outside, None
        return
    bindir = _binaries()
    if bindir is None:
        message = (
            "no PostgreSQL server: set ALIKASSA_TEST_DSN or install Debian's "
            "postgresql package (.ci/run does)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    cluster = Cluster(bindir)
    try:
        cluster.start()
        yield cluster.dsn, cluster
    finally:
        cluster.destroy()


def require_binaries() -> Path:
    """The PostgreSQL binaries' folder; fails in CI, skips elsewhere, when there are none."""
    bindir = _binaries()
    if bindir is None:
        message = "needs the Debian postgresql binaries (/usr/lib/postgresql/*/bin)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return bindir


def own_cluster() -> Cluster:
    """A cluster this test may crash and restart (never an outside server)."""
    cluster = Cluster(require_binaries())
    cluster.start()
    return cluster


def fresh_database(dsn: str) -> str:
    """A new, empty database on the server of ``dsn``; its DSN."""
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = dsn.rpartition("/")
    query = ""
    if "?" in dsn:
        base_db, _, query = dsn.partition("?")
        base = base_db.rpartition("/")[0]
        query = "?" + query
    return f"{base}/{name}{query}"


def wait_until_up(dsn: str, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while True:
        try:
            with psycopg.connect(dsn, connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[tuple[str, Cluster | None]]:
    """The session's PostgreSQL server: ``(dsn, cluster or None)``."""
    with server() as running:
        yield running


@pytest.fixture
def pg_dsn(pg_server: tuple[str, Cluster | None]) -> str:
    """A fresh, empty database for one test."""
    return fresh_database(pg_server[0])
