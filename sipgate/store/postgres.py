"""The PostgreSQL backend: the SQLite backend's behaviour on a shared server.

Same methods, values, errors, SIDs, dates, paging order, cascades, limits,
revision counter and change log as ``SqliteStore``; see that module for the
semantics.  What differs is how they are kept:

* Every write runs in one READ COMMITTED transaction that first locks the
  single ``meta`` row (``SELECT ... FOR UPDATE``): writers, in this process
  or any other, are serialised as SQLite's ``BEGIN IMMEDIATE`` serialises
  them, so every check (domain taken, duplicate network, limits) sees the
  previous writer's commit, the revision rises by exactly one per change,
  and the change log rows are in revision order.  The same transaction
  bumps the revision, writes the change log and sends
  ``pg_notify('sipgate_changes', revision)``; a method returns only after
  COMMIT (``synchronous_commit`` on: durable on the server's disk).
* Reads run in REPEATABLE READ READ ONLY transactions: ``snapshot()`` and
  ``changes_since()`` see one consistent state.
* Insertion order is an identity column named ``rowid`` in each table.
* Migrations: ``sipgate_schema.version`` counts the applied ``MIGRATIONS``;
  opening a store applies the missing ones under
  ``pg_advisory_xact_lock``, so processes starting at once apply each
  exactly once (DDL is transactional: all or nothing).
* A small pool of connections per store (``POOL_SIZE``, opened as
  needed and kept): an operation takes one for its transaction and gives
  it back, so a read (an API GET, the reloader's change check) goes on
  while a write waits for another node's write, where one shared
  connection made it wait too.  An operation waits at most ``timeout``
  for a free connection, and each statement at most ``timeout`` for a
  server lock (another writer: ``lock_timeout``), as SQLite's busy
  timeout bounds the wait for its lock; a statement runs at most
  ``STATEMENT_TIMEOUT``; connecting waits at most ``connect_timeout``.
  Any driver error fails as Unavailable (the API answers 503).  A
  connection found dead when an operation starts (the server restarted)
  is replaced once, transparently, because nothing was sent on it yet; a
  connection that breaks mid-operation fails that operation and is
  dropped.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from sipgate.store import validate as v
from sipgate.store.model import (
    CODE_ACL_ALREADY_ASSOCIATED,
    CODE_DOMAIN_TAKEN,
    CODE_INVALID_IP,
    CODE_LISTS_PER_ACCOUNT,
    TRUNK_DEFAULTS,
    Account,
    AclEntry,
    Conflict,
    Delta,
    InvalidParameter,
    IpAccessControlList,
    IpAddress,
    LimitExceeded,
    NotFound,
    Snapshot,
    Trunk,
    TrunkAcl,
    TrunkRules,
    Unavailable,
    list_full,
)

__all__ = ["NOTIFY_CHANNEL", "PostgresStore"]

_ROWID = "rowid BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE"
# Versioned schema: MIGRATIONS[i] takes sipgate_schema.version i to i + 1
# (the same versions as the SQLite backend's user_version).
MIGRATIONS: tuple[str, ...] = (
    f"""
    CREATE TABLE meta (id INTEGER PRIMARY KEY CHECK (id = 1), revision BIGINT NOT NULL);
    INSERT INTO meta (id, revision) VALUES (1, 0);
    CREATE TABLE accounts (
        sid TEXT PRIMARY KEY, friendly_name TEXT NOT NULL,
        date_created TIMESTAMPTZ NOT NULL, date_updated TIMESTAMPTZ NOT NULL, {_ROWID});
    CREATE TABLE trunks (
        sid TEXT PRIMARY KEY,
        account_sid TEXT NOT NULL REFERENCES accounts(sid) ON DELETE CASCADE,
        friendly_name TEXT NOT NULL, domain_name TEXT UNIQUE,
        disaster_recovery_method TEXT NOT NULL, disaster_recovery_url TEXT,
        secure BOOLEAN NOT NULL, recording_mode TEXT NOT NULL, recording_trim TEXT NOT NULL,
        transfer_mode TEXT NOT NULL, transfer_caller_id TEXT NOT NULL,
        cnam_lookup_enabled BOOLEAN NOT NULL, symmetric_rtp_enabled BOOLEAN NOT NULL,
        date_created TIMESTAMPTZ NOT NULL, date_updated TIMESTAMPTZ NOT NULL, {_ROWID});
    CREATE INDEX trunks_account ON trunks (account_sid, date_created, rowid);
    CREATE TABLE acls (
        sid TEXT PRIMARY KEY,
        account_sid TEXT NOT NULL REFERENCES accounts(sid) ON DELETE CASCADE,
        friendly_name TEXT NOT NULL,
        date_created TIMESTAMPTZ NOT NULL, date_updated TIMESTAMPTZ NOT NULL, {_ROWID});
    CREATE INDEX acls_account ON acls (account_sid, date_created, rowid);
    CREATE TABLE ip_addresses (
        sid TEXT PRIMARY KEY,
        account_sid TEXT NOT NULL,
        acl_sid TEXT NOT NULL REFERENCES acls(sid) ON DELETE CASCADE,
        friendly_name TEXT NOT NULL, ip_address TEXT NOT NULL,
        cidr_prefix_length INTEGER NOT NULL, network TEXT NOT NULL,
        date_created TIMESTAMPTZ NOT NULL, date_updated TIMESTAMPTZ NOT NULL, {_ROWID},
        UNIQUE (acl_sid, network));
    CREATE INDEX ip_addresses_acl ON ip_addresses (acl_sid, date_created, rowid);
    CREATE TABLE trunk_acls (
        trunk_sid TEXT NOT NULL REFERENCES trunks(sid) ON DELETE CASCADE,
        acl_sid TEXT NOT NULL REFERENCES acls(sid) ON DELETE CASCADE,
        account_sid TEXT NOT NULL,
        date_created TIMESTAMPTZ NOT NULL, date_updated TIMESTAMPTZ NOT NULL, {_ROWID},
        PRIMARY KEY (trunk_sid, acl_sid));
    CREATE INDEX trunk_acls_acl ON trunk_acls (acl_sid)
    """,
    # 1 -> 2: the change log (see the SQLite backend).
    f"""
    CREATE TABLE changes (
        revision BIGINT NOT NULL, op TEXT NOT NULL,
        acl_sid TEXT, ip_sid TEXT, address TEXT, prefix INTEGER, {_ROWID});
    CREATE INDEX changes_revision ON changes (revision)
    """,
    # 2 -> 3: the edge processes sharing the store (see the SQLite backend);
    # "seen" is the server's clock, one clock for every node.
    """
    CREATE TABLE nodes (id TEXT PRIMARY KEY, revision BIGINT NOT NULL, seen TIMESTAMPTZ NOT NULL)
    """,
)
# pg_advisory_xact_lock key held while migrating (advisory locks are per database).
MIGRATION_LOCK = 0x5167_6174_6531  # any constant of this program's own
# Revisions of change log kept; an edge further behind recompiles in full.
CHANGE_LOG_KEEP = 1000
# Opening (and migrating) may wait this long for another process's migration.
OPEN_TIMEOUT = 10.0
# How long one operation waits for a free connection of this store's pool,
# and for a lock on the server (another writer), before failing as
# Unavailable (as SQLite's).
OP_TIMEOUT = 2.0
# Connections per store (each process's, opened as needed): writers are
# serialised by the server anyway (the meta row); more lets reads go on
# beside a write that waits, at a few MiB of server memory each.
POOL_SIZE = 4
# The ceiling on one statement's run time (a snapshot of a million entries
# must fit): a server too slow for it fails the operation as Unavailable.
STATEMENT_TIMEOUT = 60.0
# How long establishing a connection may take (libpq counts whole seconds, at least 2).
CONNECT_TIMEOUT = 2
# The channel every committed write notifies, with the new revision as payload.
NOTIFY_CHANNEL = "sipgate_changes"

_TRUNK_COLUMNS = ("sid", "account_sid", "friendly_name", "domain_name", "disaster_recovery_method",
                  "disaster_recovery_url", "secure", "recording_mode", "recording_trim", "transfer_mode",
                  "transfer_caller_id", "cnam_lookup_enabled", "symmetric_rtp_enabled",
                  "date_created", "date_updated")


def _dt(value: datetime) -> datetime:
    return value.astimezone(timezone.utc)


def _unavailable(exc: BaseException) -> Unavailable:
    text = str(exc).strip().splitlines()
    return Unavailable(f"store unavailable: {text[0] if text else type(exc).__name__}")


class _Cursor:
    """A psycopg cursor taking ``?`` placeholders too.

    The seed loader (sipgate.store.seed) still writes SQLite's ``?``
    placeholders through ``tx.cur``; this keeps it working on PostgreSQL.
    No SQL of this module holds a literal ``?``.
    """

    __slots__ = ("_cur",)

    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self._cur = cur

    def execute(self, sql: str, params: Any = None) -> _Cursor:
        self._cur.execute(sql.replace("?", "%s"), params if params else None)
        return self

    def executemany(self, sql: str, rows: Any) -> None:
        self._cur.executemany(sql.replace("?", "%s"), rows)

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cur.fetchall()

    def __iter__(self) -> Iterator[Any]:
        return iter(self._cur.fetchall())

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount


class _Tx:
    """One write transaction; ``changed = False`` skips the revision bump (see SqliteStore)."""

    def __init__(self, cur: _Cursor, now: datetime) -> None:
        self.cur = cur
        self.now = now
        self.ts = now
        self.changed = True
        self.structural = False
        self.log: list[tuple[str, str | None, str | None, str | None, int | None]] = []

    def entry(self, op: str, acl_sid: str | None, other_sid: str | None = None,
              address: str | None = None, prefix: int | None = None) -> None:
        self.log.append((op, acl_sid, other_sid, address, prefix))


class _Held:
    """The connection an operation holds (None until it opens one)."""

    __slots__ = ("conn",)

    def __init__(self, conn: psycopg.Connection[Any] | None) -> None:
        self.conn = conn


class PostgresStore:
    """Accounts, trunks, lists, addresses and associations in one PostgreSQL database."""

    def __init__(self, dsn: str, *, max_ips_per_list: int | None = None,
                 max_lists_per_account: int | None = None, timeout: float = OP_TIMEOUT,
                 connect_timeout: int = CONNECT_TIMEOUT) -> None:
        self.dsn = dsn
        self.max_ips_per_list = max_ips_per_list
        self.max_lists_per_account = max_lists_per_account
        self.timeout = timeout
        self.connect_timeout = max(2, int(connect_timeout))
        # The pool: a slot per connection an operation may hold, and the
        # connections open and free.
        self._slots = threading.BoundedSemaphore(POOL_SIZE)
        self._idle: list[psycopg.Connection[Any]] = []
        self._closed = False
        self._listener: psycopg.Connection[Any] | None = None
        self._listen_lock = threading.Lock()
        # Revisions received but not yet returned by wait_for_change().
        self._pending: deque[int] = deque()
        try:
            self._migrate()
        except psycopg.Error as exc:
            raise _unavailable(exc) from None

    # -- plumbing ------------------------------------------------------------
    def _connect(self, lock_timeout: float | None = None) -> psycopg.Connection[Any]:
        ms = max(1, int((lock_timeout or self.timeout) * 1000))
        stmt_ms = int(STATEMENT_TIMEOUT * 1000)
        # The DSN's own options (a search_path, say) come first; ours win.
        given = conninfo_to_dict(self.dsn).get("options") or ""
        return psycopg.connect(
            self.dsn, autocommit=True, connect_timeout=self.connect_timeout,
            application_name="sipgate",
            options=f"{given} -c TimeZone=UTC -c lock_timeout={ms} -c statement_timeout={stmt_ms} "
                    f"-c idle_in_transaction_session_timeout={stmt_ms}".strip(),
            # A server that vanishes without closing the connection fails
            # the operation instead of hanging it.
            keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=3,
            tcp_user_timeout=max(ms * 2, 5000))

    def _migrate(self) -> None:
        conn = self._connect(OPEN_TIMEOUT)
        try:
            conn.execute("BEGIN")
            try:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                conn.execute("CREATE TABLE IF NOT EXISTS sipgate_schema "
                             "(id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)")
                conn.execute("INSERT INTO sipgate_schema VALUES (1, 0) ON CONFLICT (id) DO NOTHING")
                row = conn.execute("SELECT version FROM sipgate_schema WHERE id = 1").fetchone()
                version = row[0] if row is not None else 0
                if version > len(MIGRATIONS):
                    raise Unavailable(f"the database has schema version {version}, newer than this "
                                      f"sipgate's {len(MIGRATIONS)}: upgrade sipgate")
                for i in range(version, len(MIGRATIONS)):
                    for statement in MIGRATIONS[i].split(";"):
                        if statement.strip():
                            conn.execute(statement)
                conn.execute("UPDATE sipgate_schema SET version = %s WHERE id = 1", (len(MIGRATIONS),))
                conn.execute("COMMIT")
            except BaseException:
                if not conn.broken:
                    conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()

    @staticmethod
    def _drop(held: _Held) -> None:
        conn, held.conn = held.conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass

    @contextmanager
    def _held(self) -> Iterator[_Held]:
        """A connection of the pool (or None: _begin opens one) for one
        operation, given back after it unless it broke or the store closed."""
        if self._closed:
            raise Unavailable("store unavailable: closed")
        if not self._slots.acquire(timeout=self.timeout):
            raise Unavailable(f"store unavailable: busy for more than {self.timeout:g} s")
        try:
            held = _Held(self._idle.pop() if self._idle else None)
        except IndexError:  # (another thread took the last one meanwhile)
            held = _Held(None)
        try:
            if self._closed:
                raise Unavailable("store unavailable: closed")
            yield held
        finally:
            conn = held.conn
            if conn is not None:
                if self._closed or conn.closed or conn.broken:
                    self._drop(held)
                else:
                    self._idle.append(conn)
            self._slots.release()

    def _begin(self, held: _Held, statement: str) -> psycopg.Connection[Any]:
        """Start a transaction, on a new connection if the held one is dead."""
        conn = held.conn
        if conn is not None and (conn.closed or conn.broken):
            self._drop(held)
            conn = None
        if conn is None:
            conn = held.conn = self._connect()
            conn.execute(statement)
            return conn
        try:
            conn.execute(statement)
        except psycopg.OperationalError:
            # Died while idle (a server restart, an idle timeout): nothing
            # of this operation was sent yet, so one new connection is safe.
            self._drop(held)
            conn = held.conn = self._connect()
            conn.execute(statement)
        return conn

    def _rollback(self, held: _Held) -> None:
        conn = held.conn
        if conn is None:
            return
        if conn.broken or conn.closed:
            self._drop(held)
            return
        try:
            conn.execute("ROLLBACK")
        except psycopg.Error:
            self._drop(held)

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection in a transaction started with ``begin``,
        committed after the block, rolled back if it raises (a driver error
        as Unavailable)."""
        with self._held() as held:
            try:
                conn = self._begin(held, begin)
            except psycopg.Error as exc:
                self._drop(held)
                raise _unavailable(exc) from None
            try:
                yield conn
                conn.execute("COMMIT")
            except psycopg.Error as exc:
                self._rollback(held)
                raise _unavailable(exc) from None
            except BaseException:
                self._rollback(held)
                raise

    @contextmanager
    def _write(self) -> Iterator[_Tx]:
        with self._transaction("BEGIN ISOLATION LEVEL READ COMMITTED") as conn:
            cur = _Cursor(conn.cursor())
            # Serialise writers (see the module docstring), then read the clock.
            cur.execute("SELECT revision FROM meta WHERE id = 1 FOR UPDATE")
            tx = _Tx(cur, v.utcnow())
            yield tx
            if tx.changed:
                revision = cur.execute("UPDATE meta SET revision = revision + 1 WHERE id = 1 "
                                       "RETURNING revision").fetchone()[0]
                if tx.structural or not tx.log:
                    cur.execute("INSERT INTO changes (revision, op) VALUES (%s, %s)",
                                (revision, "S" if tx.structural else "."))
                else:
                    cur.executemany("INSERT INTO changes (revision, op, acl_sid, ip_sid, address, prefix) "
                                    "VALUES (%s, %s, %s, %s, %s, %s)", [(revision, *row) for row in tx.log])
                cur.execute("DELETE FROM changes WHERE revision <= %s", (revision - CHANGE_LOG_KEEP,))
                cur.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, str(revision)))

    @contextmanager
    def _read(self) -> Iterator[_Cursor]:
        with self._transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") as conn:
            yield _Cursor(conn.cursor())

    def close(self) -> None:
        """Close the connections; every later operation fails as Unavailable.

        Waits for an operation in progress, and for a ``wait_for_change``
        in progress to time out.
        """
        self._closed = True
        for _ in range(POOL_SIZE):  # every operation in progress ends
            self._slots.acquire()
        try:
            while self._idle:
                self._drop(_Held(self._idle.pop()))
        finally:
            for _ in range(POOL_SIZE):
                self._slots.release()
        with self._listen_lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None

    def revision(self) -> int:
        """The revision number, bumped by every write."""
        with self._read() as cur:
            return cur.execute("SELECT revision FROM meta WHERE id = 1").fetchone()[0]

    # -- the edge processes sharing the store ----------------------------------
    def _nodes_write(self, statements: list[tuple[str, tuple]]) -> None:
        """A small transaction on the nodes table alone: not a write of the
        store's state (no meta lock, no revision)."""
        with self._transaction("BEGIN ISOLATION LEVEL READ COMMITTED") as conn:
            for sql, params in statements:
                conn.execute(sql, params)

    def report_node(self, node: str, revision: int) -> None:
        """Record that edge process ``node`` enforces ``revision`` (or a later
        one it reported) and is alive now; forget processes silent for a day."""
        self._nodes_write([
            ("INSERT INTO nodes VALUES (%s, %s, now()) ON CONFLICT (id) DO UPDATE SET "
             "revision = GREATEST(nodes.revision, EXCLUDED.revision), seen = EXCLUDED.seen", (node, revision)),
            ("DELETE FROM nodes WHERE seen < now() - interval '1 day'", ()),
        ])

    def forget_node(self, node: str) -> None:
        """``node`` stops: no write waits for it any more."""
        self._nodes_write([("DELETE FROM nodes WHERE id = %s", (node,))])

    def nodes_behind(self, revision: int, fresh: float, exclude: str = "") -> list[tuple[str, float]]:
        """(id, Unix time last heard from) of the edge processes heard from in
        the last ``fresh`` seconds whose table is older than ``revision``,
        but those whose id starts with ``exclude`` (a node's own processes)."""
        with self._read() as cur:
            rows = cur.execute("SELECT id, extract(epoch FROM seen) FROM nodes WHERE revision < %s "
                               "AND seen > now() - make_interval(secs => %s) "
                               "AND (%s = '' OR substr(id, 1, length(%s)) <> %s) ORDER BY id",
                               (revision, fresh, exclude, exclude, exclude)).fetchall()
        return [(r[0], float(r[1])) for r in rows]

    # -- change notification -----------------------------------------------
    def wait_for_change(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` s for a write committed by anyone; its revision, or None.

        Listens on a connection of its own (opened on first use, reopened
        after a failure), so it never holds up the store's operations.
        Notifications that arrive between two calls, or together in one
        read from the server, are kept and returned one per call, in
        order; a caller that must not miss a change checks ``revision()``
        after the first call too.
        Raises Unavailable if the server cannot be reached.
        """
        if self._closed:
            raise Unavailable("store unavailable: closed")
        with self._listen_lock:
            if self._pending:
                return self._pending.popleft()
            try:
                if self._listener is None or self._listener.closed or self._listener.broken:
                    self._listener = None
                    conn = self._connect()
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self._listener = conn
                # Run the generator to its end: it stops after the first
                # read that brings a notification, and leaving it early
                # would drop the rest of that read.
                for note in self._listener.notifies(timeout=timeout, stop_after=1):
                    self._pending.append(int(note.payload))
                return self._pending.popleft() if self._pending else None
            except psycopg.Error as exc:
                if self._listener is not None:
                    self._listener.close()
                    self._listener = None
                raise _unavailable(exc) from None

    def listen(self, callback: Callable[[int], None], *, poll: float = 1.0) -> Callable[[], None]:
        """Call ``callback(revision)`` in a daemon thread after each committed write.

        Returns a function that stops the thread (within ``poll`` s).  While
        the server is unreachable the thread retries every ``poll`` s.
        """
        stop = threading.Event()

        def run() -> None:
            while not stop.is_set():
                try:
                    revision = self.wait_for_change(poll)
                except Unavailable:
                    if self._closed:
                        return
                    stop.wait(poll)
                    continue
                if revision is not None and not stop.is_set():
                    callback(revision)

        thread = threading.Thread(target=run, name="sipgate-pg-listen", daemon=True)
        thread.start()

        def cancel() -> None:
            stop.set()
            thread.join(poll + self.timeout + 1)

        return cancel

    # -- accounts ------------------------------------------------------------
    _ACCOUNT_SELECT = "SELECT sid, friendly_name, date_created, date_updated FROM accounts"

    def ensure_account(self, sid: str, friendly_name: str = "") -> Account:
        """Create the account if it does not exist; return it."""
        v.account_sid(sid)
        name = v.friendly_name(friendly_name, required=False)
        with self._write() as tx:
            account = self._ensure_account(tx, sid, name)
        return account

    def _ensure_account(self, tx: _Tx, sid: str, name: str) -> Account:
        row = tx.cur.execute(self._ACCOUNT_SELECT + " WHERE sid = %s", (sid,)).fetchone()
        if row is not None:
            tx.changed = False
            return Account(row[0], row[1], _dt(row[2]), _dt(row[3]))
        tx.cur.execute("INSERT INTO accounts (sid, friendly_name, date_created, date_updated) "
                       "VALUES (%s, %s, %s, %s)", (sid, name, tx.ts, tx.ts))
        return Account(sid, name, tx.now, tx.now)

    def get_account(self, sid: str) -> Account:
        with self._read() as cur:
            row = cur.execute(self._ACCOUNT_SELECT + " WHERE sid = %s", (sid,)).fetchone()
        if row is None:
            raise NotFound("Account", sid)
        return Account(row[0], row[1], _dt(row[2]), _dt(row[3]))

    def _require_account(self, cur: _Cursor, sid: str) -> None:
        if cur.execute("SELECT 1 FROM accounts WHERE sid = %s", (sid,)).fetchone() is None:
            raise NotFound("Account", sid)

    # -- trunks --------------------------------------------------------------
    @staticmethod
    def _trunk(row: tuple, auth: bool) -> Trunk:
        values = dict(zip(_TRUNK_COLUMNS, row))
        values["date_created"] = _dt(values["date_created"])
        values["date_updated"] = _dt(values["date_updated"])
        return Trunk(auth_type="IP_ACL" if auth else "", **values)

    _TRUNK_SELECT = (f"SELECT {', '.join('t.' + c for c in _TRUNK_COLUMNS)}, "
                     "EXISTS (SELECT 1 FROM trunk_acls a WHERE a.trunk_sid = t.sid) FROM trunks t")

    def _get_trunk(self, cur: _Cursor, account_sid: str, sid: str) -> Trunk:
        row = cur.execute(self._TRUNK_SELECT + " WHERE t.sid = %s AND t.account_sid = %s",
                          (sid, account_sid)).fetchone()
        if row is None:
            raise NotFound("Trunk", sid)
        return self._trunk(row[:-1], row[-1])

    def create_trunk(self, account_sid: str, **fields: Any) -> Trunk:
        """Create a trunk with Twilio's defaults for what is not given."""
        values = {**TRUNK_DEFAULTS, **v.trunk_fields(fields)}
        with self._write() as tx:
            trunk = self._create_trunk(tx, account_sid, values)
        return trunk

    def _create_trunk(self, tx: _Tx, account_sid: str, values: dict[str, Any]) -> Trunk:
        self._require_account(tx.cur, account_sid)
        self._check_domain(tx.cur, values.get("domain_name"), None)
        sid = v.new_sid("TK")
        row = {**values, "sid": sid, "account_sid": account_sid, "date_created": tx.ts, "date_updated": tx.ts}
        tx.cur.execute(f"INSERT INTO trunks ({', '.join(_TRUNK_COLUMNS)}) VALUES "
                       f"({', '.join(['%s'] * len(_TRUNK_COLUMNS))})", [row[c] for c in _TRUNK_COLUMNS])
        tx.entry("T", None, sid)
        return self._get_trunk(tx.cur, account_sid, sid)

    @staticmethod
    def _check_domain(cur: _Cursor, domain: str | None, own_sid: str | None) -> None:
        if domain is None:
            return
        row = cur.execute("SELECT sid FROM trunks WHERE domain_name = %s", (domain,)).fetchone()
        if row is not None and row[0] != own_sid:
            raise Conflict(CODE_DOMAIN_TAKEN, "DomainName", f"DomainName {domain!r} is already in use")

    def get_trunk(self, account_sid: str, sid: str) -> Trunk:
        with self._read() as cur:
            return self._get_trunk(cur, account_sid, sid)

    def list_trunks(self, account_sid: str, *, limit: int, offset: int = 0) -> list[Trunk]:
        v.page(limit, offset)
        with self._read() as cur:
            rows = cur.execute(self._TRUNK_SELECT + " WHERE t.account_sid = %s ORDER BY t.date_created, t.rowid "
                               "LIMIT %s OFFSET %s", (account_sid, limit, offset)).fetchall()
        return [self._trunk(r[:-1], r[-1]) for r in rows]

    def count_trunks(self, account_sid: str) -> int:
        with self._read() as cur:
            return cur.execute("SELECT COUNT(*) FROM trunks WHERE account_sid = %s", (account_sid,)).fetchone()[0]

    def update_trunk(self, account_sid: str, sid: str, **fields: Any) -> Trunk:
        values = v.trunk_fields(fields)
        with self._write() as tx:
            current = self._get_trunk(tx.cur, account_sid, sid)
            if "domain_name" in values:
                self._check_domain(tx.cur, values["domain_name"], sid)
                if values["domain_name"] != current.domain_name:
                    tx.entry("T", None, sid)
            if values:
                sets = ", ".join(f"{k} = %s" for k in values)  # keys checked by v.trunk_fields
                tx.cur.execute(f"UPDATE trunks SET {sets}, date_updated = %s WHERE sid = %s",
                               [*values.values(), tx.ts, sid])
            return self._get_trunk(tx.cur, account_sid, sid)

    def delete_trunk(self, account_sid: str, sid: str) -> None:
        """Delete a trunk and its list associations (the lists stay)."""
        with self._write() as tx:
            self._get_trunk(tx.cur, account_sid, sid)
            for (acl_sid,) in tx.cur.execute("SELECT acl_sid FROM trunk_acls WHERE trunk_sid = %s ORDER BY rowid",
                                             (sid,)).fetchall():
                tx.entry("D", acl_sid, sid)
            tx.cur.execute("DELETE FROM trunks WHERE sid = %s", (sid,))
            tx.entry("R", None, sid)

    def find_trunk_by_domain(self, domain_name: str) -> Trunk | None:
        with self._read() as cur:
            row = cur.execute(self._TRUNK_SELECT + " WHERE t.domain_name = %s", (domain_name.lower(),)).fetchone()
        return None if row is None else self._trunk(row[:-1], row[-1])

    # -- lists ---------------------------------------------------------------
    _ACL_SELECT = "SELECT sid, account_sid, friendly_name, date_created, date_updated FROM acls"

    @staticmethod
    def _acl(row: tuple) -> IpAccessControlList:
        return IpAccessControlList(row[0], row[1], row[2], _dt(row[3]), _dt(row[4]))

    def _get_acl(self, cur: _Cursor, account_sid: str, sid: str) -> IpAccessControlList:
        row = cur.execute(self._ACL_SELECT + " WHERE sid = %s AND account_sid = %s", (sid, account_sid)).fetchone()
        if row is None:
            raise NotFound("IpAccessControlList", sid)
        return self._acl(row)

    def create_acl(self, account_sid: str, friendly_name: str) -> IpAccessControlList:
        name = v.friendly_name(friendly_name, required=True)
        with self._write() as tx:
            return self._create_acl(tx, account_sid, name)

    def _create_acl(self, tx: _Tx, account_sid: str, name: str) -> IpAccessControlList:
        self._require_account(tx.cur, account_sid)
        if self.max_lists_per_account is not None:
            n = tx.cur.execute("SELECT COUNT(*) FROM acls WHERE account_sid = %s", (account_sid,)).fetchone()[0]
            if n >= self.max_lists_per_account:
                raise LimitExceeded(CODE_LISTS_PER_ACCOUNT, "FriendlyName",
                                    f"the account already has the maximum of {self.max_lists_per_account} "
                                    "IP access control lists")
        sid = v.new_sid("AL")
        tx.cur.execute("INSERT INTO acls (sid, account_sid, friendly_name, date_created, date_updated) "
                       "VALUES (%s, %s, %s, %s, %s)", (sid, account_sid, name, tx.ts, tx.ts))
        return IpAccessControlList(sid, account_sid, name, tx.now, tx.now)

    def get_acl(self, account_sid: str, sid: str) -> IpAccessControlList:
        with self._read() as cur:
            return self._get_acl(cur, account_sid, sid)

    def list_acls(self, account_sid: str, *, limit: int, offset: int = 0) -> list[IpAccessControlList]:
        v.page(limit, offset)
        with self._read() as cur:
            rows = cur.execute(self._ACL_SELECT + " WHERE account_sid = %s ORDER BY date_created, rowid "
                               "LIMIT %s OFFSET %s", (account_sid, limit, offset)).fetchall()
        return [self._acl(r) for r in rows]

    def count_acls(self, account_sid: str) -> int:
        with self._read() as cur:
            return cur.execute("SELECT COUNT(*) FROM acls WHERE account_sid = %s", (account_sid,)).fetchone()[0]

    def update_acl(self, account_sid: str, sid: str, friendly_name: str) -> IpAccessControlList:
        name = v.friendly_name(friendly_name, required=True)
        with self._write() as tx:
            if self._get_acl(tx.cur, account_sid, sid).friendly_name != name:
                tx.entry("N", sid)  # the name rides in the compiled entries
            tx.cur.execute("UPDATE acls SET friendly_name = %s, date_updated = %s WHERE sid = %s",
                           (name, tx.ts, sid))
            return self._get_acl(tx.cur, account_sid, sid)

    def delete_acl(self, account_sid: str, sid: str) -> None:
        """Delete a list, its addresses and its associations with any trunk."""
        with self._write() as tx:
            self._get_acl(tx.cur, account_sid, sid)
            for (trunk_sid,) in tx.cur.execute("SELECT trunk_sid FROM trunk_acls WHERE acl_sid = %s ORDER BY rowid",
                                               (sid,)).fetchall():
                tx.entry("D", sid, trunk_sid)
            tx.log.extend(("-", sid, ip_sid, address, prefix) for ip_sid, address, prefix in tx.cur.execute(
                "SELECT sid, ip_address, cidr_prefix_length FROM ip_addresses WHERE acl_sid = %s ORDER BY rowid",
                (sid,)).fetchall())
            tx.cur.execute("DELETE FROM acls WHERE sid = %s", (sid,))

    # -- addresses -----------------------------------------------------------
    _IP_SELECT = ("SELECT sid, account_sid, acl_sid, friendly_name, ip_address, cidr_prefix_length, "
                  "date_created, date_updated FROM ip_addresses")

    @staticmethod
    def _ip(row: tuple) -> IpAddress:
        return IpAddress(row[0], row[1], row[2], row[3], row[4], row[5], _dt(row[6]), _dt(row[7]))

    def _get_ip(self, cur: _Cursor, account_sid: str, acl_sid: str, sid: str) -> IpAddress:
        row = cur.execute(self._IP_SELECT + " WHERE sid = %s AND acl_sid = %s AND account_sid = %s",
                          (sid, acl_sid, account_sid)).fetchone()
        if row is None:
            raise NotFound("IpAddress", sid)
        return self._ip(row)

    @staticmethod
    def _check_duplicate(cur: _Cursor, acl_sid: str, network: str, own_sid: str | None) -> None:
        row = cur.execute("SELECT sid FROM ip_addresses WHERE acl_sid = %s AND network = %s",
                          (acl_sid, network)).fetchone()
        if row is not None and row[0] != own_sid:
            raise InvalidParameter(CODE_INVALID_IP, "IpAddress",
                                   f"network {network} already exists in this IP access control list")

    def create_ip_address(self, account_sid: str, acl_sid: str, *, friendly_name: str, ip_address: str,
                          cidr_prefix_length: int | None = None) -> IpAddress:
        name = v.friendly_name(friendly_name, required=True)
        entry = v.ip_entry(ip_address, cidr_prefix_length)
        with self._write() as tx:
            return self._create_ip(tx, account_sid, acl_sid, name, entry)

    def _create_ip(self, tx: _Tx, account_sid: str, acl_sid: str, name: str, entry: v.IpEntry) -> IpAddress:
        self._get_acl(tx.cur, account_sid, acl_sid)
        self._check_duplicate(tx.cur, acl_sid, entry.network, None)
        if self.max_ips_per_list is not None:
            n = tx.cur.execute("SELECT COUNT(*) FROM ip_addresses WHERE acl_sid = %s", (acl_sid,)).fetchone()[0]
            if n >= self.max_ips_per_list:
                raise list_full(self.max_ips_per_list)
        sid = v.new_sid("IP")
        tx.cur.execute("INSERT INTO ip_addresses (sid, account_sid, acl_sid, friendly_name, ip_address, "
                       "cidr_prefix_length, network, date_created, date_updated) "
                       "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                       (sid, account_sid, acl_sid, name, entry.address, entry.prefix, entry.network, tx.ts, tx.ts))
        tx.entry("+", acl_sid, sid, entry.address, entry.prefix)
        return IpAddress(sid, account_sid, acl_sid, name, entry.address, entry.prefix, tx.now, tx.now)

    def _create_ips(self, tx: _Tx, account_sid: str, acl_sid: str, rows: list[tuple[str, v.IpEntry]]) -> None:
        """_create_ip for many addresses of one list at once (the seed's bulk
        load), which the caller has checked against the list and its limit."""
        self._get_acl(tx.cur, account_sid, acl_sid)
        sids = v.new_sids("IP", len(rows))  # (in index order: see SqliteStore._create_ips)
        values = []
        for sid, (name, entry) in zip(sids, rows):
            values.append((sid, account_sid, acl_sid, name, entry.address, entry.prefix, entry.network, tx.ts, tx.ts))
            if not tx.structural:  # (a structural change logs no entries: the edge recompiles)
                tx.entry("+", acl_sid, sid, entry.address, entry.prefix)
        tx.cur.executemany("INSERT INTO ip_addresses (sid, account_sid, acl_sid, friendly_name, ip_address, "
                           "cidr_prefix_length, network, date_created, date_updated) "
                           "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)", values)

    def get_ip_address(self, account_sid: str, acl_sid: str, sid: str) -> IpAddress:
        with self._read() as cur:
            self._get_acl(cur, account_sid, acl_sid)
            return self._get_ip(cur, account_sid, acl_sid, sid)

    def list_ip_addresses(self, account_sid: str, acl_sid: str, *, limit: int, offset: int = 0) -> list[IpAddress]:
        v.page(limit, offset)
        with self._read() as cur:
            self._get_acl(cur, account_sid, acl_sid)
            rows = cur.execute(self._IP_SELECT + " WHERE acl_sid = %s ORDER BY date_created, rowid "
                               "LIMIT %s OFFSET %s", (acl_sid, limit, offset)).fetchall()
        return [self._ip(r) for r in rows]

    def count_ip_addresses(self, account_sid: str, acl_sid: str) -> int:
        with self._read() as cur:
            self._get_acl(cur, account_sid, acl_sid)
            return cur.execute("SELECT COUNT(*) FROM ip_addresses WHERE acl_sid = %s", (acl_sid,)).fetchone()[0]

    def update_ip_address(self, account_sid: str, acl_sid: str, sid: str, *, friendly_name: str | None = None,
                          ip_address: str | None = None, cidr_prefix_length: int | None = None) -> IpAddress:
        with self._write() as tx:
            self._get_acl(tx.cur, account_sid, acl_sid)
            current = self._get_ip(tx.cur, account_sid, acl_sid, sid)
            name = current.friendly_name if friendly_name is None else v.friendly_name(friendly_name, required=True)
            # A new address without a prefix keeps the current prefix only
            # when it is of the same family.
            address = current.ip_address if ip_address is None else ip_address
            prefix = cidr_prefix_length
            if prefix is None and (ip_address is None or (":" in ip_address) == (":" in current.ip_address)):
                prefix = current.cidr_prefix_length
            entry = v.ip_entry(address, prefix)
            self._check_duplicate(tx.cur, acl_sid, entry.network, sid)
            tx.cur.execute("UPDATE ip_addresses SET friendly_name = %s, ip_address = %s, cidr_prefix_length = %s, "
                           "network = %s, date_updated = %s WHERE sid = %s",
                           (name, entry.address, entry.prefix, entry.network, tx.ts, sid))
            if (entry.address, entry.prefix) != (current.ip_address, current.cidr_prefix_length):
                tx.entry("-", acl_sid, sid, current.ip_address, current.cidr_prefix_length)
                tx.entry("+", acl_sid, sid, entry.address, entry.prefix)
            return self._get_ip(tx.cur, account_sid, acl_sid, sid)

    def delete_ip_address(self, account_sid: str, acl_sid: str, sid: str) -> None:
        with self._write() as tx:
            self._get_acl(tx.cur, account_sid, acl_sid)
            ip = self._get_ip(tx.cur, account_sid, acl_sid, sid)
            tx.cur.execute("DELETE FROM ip_addresses WHERE sid = %s", (sid,))
            tx.entry("-", acl_sid, sid, ip.ip_address, ip.cidr_prefix_length)

    # -- trunk <-> list associations -----------------------------------------
    _ASSOC_SELECT = ("SELECT a.account_sid, a.trunk_sid, a.acl_sid, l.friendly_name, a.date_created, "
                     "a.date_updated FROM trunk_acls a JOIN acls l ON l.sid = a.acl_sid")

    @staticmethod
    def _assoc(row: tuple) -> TrunkAcl:
        return TrunkAcl(row[0], row[1], row[2], row[3], _dt(row[4]), _dt(row[5]))

    def associate(self, account_sid: str, trunk_sid: str, acl_sid: str) -> TrunkAcl:
        """Associate a list with a trunk (both of this account)."""
        with self._write() as tx:
            return self._associate(tx, account_sid, trunk_sid, acl_sid)

    def _associate(self, tx: _Tx, account_sid: str, trunk_sid: str, acl_sid: str) -> TrunkAcl:
        self._get_trunk(tx.cur, account_sid, trunk_sid)
        acl = self._get_acl(tx.cur, account_sid, acl_sid)
        if tx.cur.execute("SELECT 1 FROM trunk_acls WHERE trunk_sid = %s AND acl_sid = %s",
                          (trunk_sid, acl_sid)).fetchone() is not None:
            raise Conflict(CODE_ACL_ALREADY_ASSOCIATED, "IpAccessControlListSid",
                           f"IpAccessControlList {acl_sid} is already associated with trunk {trunk_sid}")
        tx.cur.execute("INSERT INTO trunk_acls (trunk_sid, acl_sid, account_sid, date_created, date_updated) "
                       "VALUES (%s, %s, %s, %s, %s)", (trunk_sid, acl_sid, account_sid, tx.ts, tx.ts))
        tx.entry("A", acl_sid, trunk_sid)  # (the trunk SID rides in the ip_sid column)
        return TrunkAcl(account_sid, trunk_sid, acl_sid, acl.friendly_name, tx.now, tx.now)

    def get_trunk_acl(self, account_sid: str, trunk_sid: str, acl_sid: str) -> TrunkAcl:
        with self._read() as cur:
            self._get_trunk(cur, account_sid, trunk_sid)
            row = cur.execute(self._ASSOC_SELECT + " WHERE a.trunk_sid = %s AND a.acl_sid = %s",
                              (trunk_sid, acl_sid)).fetchone()
        if row is None:
            raise NotFound("IpAccessControlList", acl_sid)
        return self._assoc(row)

    def list_trunk_acls(self, account_sid: str, trunk_sid: str, *, limit: int, offset: int = 0) -> list[TrunkAcl]:
        v.page(limit, offset)
        with self._read() as cur:
            self._get_trunk(cur, account_sid, trunk_sid)
            rows = cur.execute(self._ASSOC_SELECT + " WHERE a.trunk_sid = %s ORDER BY a.rowid LIMIT %s OFFSET %s",
                               (trunk_sid, limit, offset)).fetchall()
        return [self._assoc(r) for r in rows]

    def count_trunk_acls(self, account_sid: str, trunk_sid: str) -> int:
        with self._read() as cur:
            self._get_trunk(cur, account_sid, trunk_sid)
            return cur.execute("SELECT COUNT(*) FROM trunk_acls WHERE trunk_sid = %s", (trunk_sid,)).fetchone()[0]

    def dissociate(self, account_sid: str, trunk_sid: str, acl_sid: str) -> None:
        with self._write() as tx:
            self._get_trunk(tx.cur, account_sid, trunk_sid)
            tx.cur.execute("DELETE FROM trunk_acls WHERE trunk_sid = %s AND acl_sid = %s", (trunk_sid, acl_sid))
            if tx.cur.rowcount == 0:
                raise NotFound("IpAccessControlList", acl_sid)
            tx.entry("D", acl_sid, trunk_sid)

    # -- the edge's view -----------------------------------------------------
    def changes_since(self, revision: int) -> Delta | None:
        """What changed after ``revision`` (see model.Delta), or None (see SqliteStore)."""
        with self._read() as cur:
            current = cur.execute("SELECT revision FROM meta WHERE id = 1").fetchone()[0]
            if current == revision:
                return Delta(current, (), {}, {})
            rows = cur.execute("SELECT revision, op, acl_sid, ip_sid, address, prefix FROM changes "
                               "WHERE revision > %s ORDER BY rowid", (revision,)).fetchall()
            if current < revision or len({r[0] for r in rows}) != current - revision \
                    or any(r[1] == "S" for r in rows):
                return None
            lists: dict[str, tuple[str | None, tuple[AclEntry, ...]]] = {}
            relinked = {r[2] for r in rows if r[1] in ("A", "D")}
            for acl_sid in relinked | {r[2] for r in rows if r[1] == "N"}:
                name = cur.execute("SELECT friendly_name FROM acls WHERE sid = %s", (acl_sid,)).fetchone()
                if name is None or acl_sid not in relinked:  # a rename needs no entries
                    lists[acl_sid] = (name and name[0], ())
                    continue
                lists[acl_sid] = (name[0], tuple(AclEntry(*e) for e in cur.execute(
                    "SELECT sid, ip_address, cidr_prefix_length FROM ip_addresses WHERE acl_sid = %s "
                    "ORDER BY rowid", (acl_sid,)).fetchall()))
            trunks: dict[str, tuple[str, str | None] | None] = {}
            for trunk_sid in {r[3] for r in rows if r[1] in ("T", "R")}:
                row = cur.execute("SELECT account_sid, domain_name FROM trunks WHERE sid = %s",
                                  (trunk_sid,)).fetchone()
                trunks[trunk_sid] = None if row is None else (row[0], row[1])
        return Delta(current, tuple(tuple(r[1:]) for r in rows if r[1] != "."), lists, trunks)

    def snapshot(self) -> Snapshot:
        """Every trunk with its lists, and every list's entries, consistently."""
        with self._read() as cur:
            revision = cur.execute("SELECT revision FROM meta WHERE id = 1").fetchone()[0]
            acl_sids: dict[str, list[str]] = {}
            for trunk_sid, acl_sid in cur.execute("SELECT trunk_sid, acl_sid FROM trunk_acls ORDER BY rowid"):
                acl_sids.setdefault(trunk_sid, []).append(acl_sid)
            trunks = tuple(
                TrunkRules(sid, account, domain, tuple(acl_sids.get(sid, ())))
                for sid, account, domain in cur.execute(
                    "SELECT sid, account_sid, domain_name FROM trunks ORDER BY date_created, rowid")
            )
            names = {sid: name for sid, name in cur.execute("SELECT sid, friendly_name FROM acls")}
            entries: dict[str, list[AclEntry]] = {sid: [] for sid in names}
            for ip_sid, acl_sid, address, prefix in cur.execute(
                    "SELECT sid, acl_sid, ip_address, cidr_prefix_length FROM ip_addresses ORDER BY rowid"):
                entries[acl_sid].append(AclEntry(ip_sid, address, prefix))
        return Snapshot(revision, trunks, {k: tuple(e) for k, e in entries.items()}, names)

