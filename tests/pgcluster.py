"""A throwaway PostgreSQL cluster owned by the test run.

``PgCluster`` runs ``initdb`` into a fresh temporary directory, starts the
server as a subprocess listening on 127.0.0.1 (a free port) and on a unix
socket in that directory, trust authentication for local connections only,
``fsync`` on, and stops it by its PID.  Run as root, the server runs as the
unprivileged ``postgres`` system user (PostgreSQL refuses root); the
temporary directory is then owned by that user.

Missing PostgreSQL binaries fail the run with a message saying what to
install: never a skip.  Fixtures: ``pg_cluster`` (session), ``pg_dsn``
(session, the maintenance database's DSN) and ``new_database(cluster)``
creating an empty database per test.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["PgCluster", "PgMissing", "find_bindir", "new_database", "pg_cluster", "pg_dsn"]

# Where Debian's postgresql-NN packages put the server binaries.
_DEBIAN_GLOB = "/usr/lib/postgresql/*/bin"
_SERVER_USER = "postgres"
START_TIMEOUT = 30.0


class PgMissing(RuntimeError):
    """The PostgreSQL server binaries are not installed."""


def find_bindir() -> Path:
    """The directory with initdb, pg_ctl and postgres (newest Debian version first)."""
    candidates = []
    if os.environ.get("SIPGATE_PG_BINDIR"):
        candidates.append(Path(os.environ["SIPGATE_PG_BINDIR"]))
    candidates += sorted((Path(p) for p in glob.glob(_DEBIAN_GLOB)),
                         key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(os.path.realpath(initdb)).parent)
    for d in candidates:
        if all((d / b).is_file() and os.access(d / b, os.X_OK) for b in ("initdb", "pg_ctl", "postgres")):
            return d
    raise PgMissing("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in "
                    f"{_DEBIAN_GLOB}, SIPGATE_PG_BINDIR or PATH: install them "
                    "(`apt-get install postgresql`, which `bin/setup --test` does)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    """One initdb'd data directory and (while started) one postmaster process."""

    def __init__(self, bindir: Path | None = None) -> None:
        self.bindir = bindir or find_bindir()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            try:
                pw = pwd.getpwnam(_SERVER_USER)
            except KeyError:
                raise PgMissing(f"running as root, but there is no {_SERVER_USER!r} user to run "
                                "PostgreSQL as (`apt-get install postgresql` creates it)") from None
            self.uid, self.gid = pw.pw_uid, pw.pw_gid
        self.base = Path(tempfile.mkdtemp(prefix="sipgate-pg-", dir=self._tmp_root()))
        self.datadir = self.base / "data"
        self.sockdir = self.base / "sock"
        self.sockdir.mkdir()
        if self.as_root:
            for p in (self.base, self.sockdir):
                os.chown(p, self.uid, self.gid)
        self.base.chmod(0o700)
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.user = _SERVER_USER if self.as_root else pwd.getpwuid(os.geteuid()).pw_name
        self._db_counter = itertools.count()
        try:
            self._initdb()
        except BaseException:
            shutil.rmtree(self.base, ignore_errors=True)
            raise

    def _tmp_root(self) -> str:
        """The temporary directory, if the server user can reach it; else /tmp."""
        root = tempfile.gettempdir()
        if not self.as_root:
            return root
        path = Path(root).resolve()
        for p in (path, *path.parents):
            if not p.stat().st_mode & 0o001:  # not traversable by others
                return "/tmp"
        return root

    # -- running binaries as the server user ---------------------------------
    def _as_server_user(self) -> dict[str, object]:
        """subprocess arguments that run the child as the server user (when root)."""
        if not self.as_root:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def _run(self, *argv: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, cwd=self.base, capture_output=True, text=True, timeout=timeout, check=False,
                              env={**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"},
                              **self._as_server_user())  # type: ignore[call-overload]

    def _initdb(self) -> None:
        done = self._run(str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", self.user,
                         "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions")
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr or done.stdout}")
        # Loopback and the socket only: trust is safe here and nowhere else.
        (self.datadir / "pg_hba.conf").write_text(
            "local all all trust\n"
            "host all all 127.0.0.1/32 trust\n")

    # -- server lifecycle ----------------------------------------------------
    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres")

    def dsn_for(self, dbname: str) -> str:
        return f"host=127.0.0.1 port={self.port} user={self.user} dbname={dbname}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start the postmaster and wait until it accepts connections."""
        if self.running:
            return
        log = open(self.base / "server.log", "ab")
        try:
            self.proc = subprocess.Popen(
                [str(self.bindir / "postgres"), "-D", str(self.datadir),
                 "-c", "listen_addresses=127.0.0.1", "-c", f"port={self.port}",
                 "-c", f"unix_socket_directories={self.sockdir}",
                 "-c", "fsync=on", "-c", "synchronous_commit=on",
                 "-c", "max_connections=100", "-c", "shared_buffers=32MB",
                 "-c", "logging_collector=off"],
                cwd=self.base, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                env={**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"},
                **self._as_server_user())  # type: ignore[call-overload]
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}: {self.log_tail()}")
            if self._ready():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"postgres did not accept connections in {START_TIMEOUT:g} s: {self.log_tail()}")

    def _ready(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.dsn, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False

    def log_tail(self, n: int = 2000) -> str:
        try:
            return (self.base / "server.log").read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server by its PID: fast shutdown (SIGINT), then SIGKILL."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)  # what `pg_ctl stop -m fast` sends the postmaster
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def destroy(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    # -- databases -----------------------------------------------------------
    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; returns its DSN."""
        import psycopg

        name = f"{prefix}_{next(self._db_counter)}"
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
            # FILE_COPY copies template1's files and fsyncs them at once;
            # WAL_LOG (the default) leaves them for the shutdown checkpoint,
            # which then takes a second per few databases.
            conn.execute(f'CREATE DATABASE "{name}" STRATEGY FILE_COPY')
        return self.dsn_for(name)

    def drop_database(self, dsn: str) -> None:
        """Drop the database a ``create_database`` DSN names (closing its connections)."""
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        name = conninfo_to_dict(dsn)["dbname"]
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def new_database(cluster: PgCluster) -> str:
    """A fresh database in ``cluster`` (CREATE DATABASE t_<n>); returns its DSN."""
    return cluster.create_database()


# -- pytest fixtures (imported by tests/store/conftest.py) -------------------
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def pg_cluster():
    """The test run's PostgreSQL cluster, started once and stopped at session end."""
    cluster = PgCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def pg_dsn(pg_cluster: PgCluster) -> str:
    """The DSN of the session cluster's maintenance database."""
    return pg_cluster.dsn
