"""The SQLite backend: one file, WAL mode, every write durable on return.

Deleting a trunk removes its list associations; deleting a list removes its
addresses and its associations with every trunk (as Twilio does: nothing
dangles, and the next compiled table no longer has them).  Every write runs
in one ``BEGIN IMMEDIATE`` transaction that also bumps the revision number
the edge watches.

One connection, shared by the threads that use the store and serialised by
a lock: SQLite admits one writer at a time anyway, and reads here are short.
An operation waits at most ``timeout`` (OP_TIMEOUT, 2 s) in all for that
lock and for SQLite's (another process's write, a ``BEGIN EXCLUSIVE``), then
fails as Unavailable; a full disk or an I/O error fails as Unavailable at
once.  Nothing half-written survives either: the transaction rolls back.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

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

__all__ = ["SqliteStore"]

# Versioned schema: MIGRATIONS[i] takes user_version i to i + 1.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (id INTEGER PRIMARY KEY CHECK (id = 1), revision INTEGER NOT NULL);
    INSERT INTO meta (id, revision) VALUES (1, 0);
    CREATE TABLE accounts (
        sid TEXT PRIMARY KEY, friendly_name TEXT NOT NULL,
        date_created TEXT NOT NULL, date_updated TEXT NOT NULL);
    CREATE TABLE trunks (
        sid TEXT PRIMARY KEY,
        account_sid TEXT NOT NULL REFERENCES accounts(sid) ON DELETE CASCADE,
        friendly_name TEXT NOT NULL, domain_name TEXT UNIQUE,
        disaster_recovery_method TEXT NOT NULL, disaster_recovery_url TEXT,
        secure INTEGER NOT NULL, recording_mode TEXT NOT NULL, recording_trim TEXT NOT NULL,
        transfer_mode TEXT NOT NULL, transfer_caller_id TEXT NOT NULL,
        cnam_lookup_enabled INTEGER NOT NULL, symmetric_rtp_enabled INTEGER NOT NULL,
        date_created TEXT NOT NULL, date_updated TEXT NOT NULL);
    CREATE INDEX trunks_account ON trunks (account_sid, date_created, sid);
    CREATE TABLE acls (
        sid TEXT PRIMARY KEY,
        account_sid TEXT NOT NULL REFERENCES accounts(sid) ON DELETE CASCADE,
        friendly_name TEXT NOT NULL,
        date_created TEXT NOT NULL, date_updated TEXT NOT NULL);
    CREATE INDEX acls_account ON acls (account_sid, date_created, sid);
    CREATE TABLE ip_addresses (
        sid TEXT PRIMARY KEY,
        account_sid TEXT NOT NULL,
        acl_sid TEXT NOT NULL REFERENCES acls(sid) ON DELETE CASCADE,
        friendly_name TEXT NOT NULL, ip_address TEXT NOT NULL,
        cidr_prefix_length INTEGER NOT NULL, network TEXT NOT NULL,
        date_created TEXT NOT NULL, date_updated TEXT NOT NULL,
        UNIQUE (acl_sid, network));
    CREATE INDEX ip_addresses_acl ON ip_addresses (acl_sid, date_created, sid);
    CREATE TABLE trunk_acls (
        trunk_sid TEXT NOT NULL REFERENCES trunks(sid) ON DELETE CASCADE,
        acl_sid TEXT NOT NULL REFERENCES acls(sid) ON DELETE CASCADE,
        account_sid TEXT NOT NULL,
        date_created TEXT NOT NULL, date_updated TEXT NOT NULL,
        PRIMARY KEY (trunk_sid, acl_sid));
    CREATE INDEX trunk_acls_acl ON trunk_acls (acl_sid);
    """,
    # 1 -> 2: the change log the edge patches its table from: per revision
    # the rows of model.Delta, or one "S" row (a bulk load such as a seed):
    # recompile everything.
    """
    CREATE TABLE changes (
        revision INTEGER NOT NULL, op TEXT NOT NULL,
        acl_sid TEXT, ip_sid TEXT, address TEXT, prefix INTEGER);
    CREATE INDEX changes_revision ON changes (revision);
    """,
    # 2 -> 3: the edge processes sharing this store, each with the revision
    # its table is at and when it last said so (report_node): a write's 2xx
    # waits for the live ones (nodes_behind).
    """
    CREATE TABLE nodes (id TEXT PRIMARY KEY, revision INTEGER NOT NULL, seen REAL NOT NULL);
    """,
)
# Revisions of change log kept; an edge further behind recompiles in full.
CHANGE_LOG_KEEP = 1000
# How long opening the file (and migrating it) waits for another process's
# write lock: a store is opened once, at start, where waiting is fine.
OPEN_TIMEOUT = 10.0
# How long one operation waits, in all, for this connection (other threads
# of this process) and for SQLite's lock (other processes) before it fails
# as Unavailable: an API request answers 503 within about this bound
# instead of queueing behind a lock held for minutes, and a request
# waiting behind another one does not wait a full bound per request ahead.
OP_TIMEOUT = 2.0
# report_node's bound (s): best effort, see there.
NODE_REPORT_BOUND = 0.05
# A bulk insert of more rows than this gets a page cache sized to it (see
# _create_ips).
_BULK_ROWS = 10_000

_TRUNK_COLUMNS = ("sid", "account_sid", "friendly_name", "domain_name", "disaster_recovery_method",
                  "disaster_recovery_url", "secure", "recording_mode", "recording_trim", "transfer_mode",
                  "transfer_caller_id", "cnam_lookup_enabled", "symmetric_rtp_enabled",
                  "date_created", "date_updated")
_BOOL_COLUMNS = frozenset({"secure", "cnam_lookup_enabled", "symmetric_rtp_enabled"})


def _ts(value: datetime) -> str:
    return value.isoformat()


def _dt(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _unavailable(exc: sqlite3.Error) -> Unavailable:
    return Unavailable(f"store unavailable: {exc}")


class _Tx:
    """One write transaction; ``changed = False`` skips the revision bump.

    Writes log what they did for the edge (see model.Delta); a write that
    logs nothing is logged as "." (the table is unaffected), and one marked
    ``structural`` as a single "S" (the edge recompiles in full).
    """

    def __init__(self, cur: sqlite3.Cursor, now: datetime) -> None:
        self.cur = cur
        self.now = now
        self.ts = _ts(now)
        self.changed = True
        self.structural = False
        self.log: list[tuple[str, str | None, str | None, str | None, int | None]] = []

    def entry(self, op: str, acl_sid: str | None, other_sid: str | None = None,
              address: str | None = None, prefix: int | None = None) -> None:
        self.log.append((op, acl_sid, other_sid, address, prefix))


class SqliteStore:
    """Accounts, trunks, lists, addresses and associations in one SQLite file."""

    def __init__(self, path: str, *, max_ips_per_list: int | None = None,
                 max_lists_per_account: int | None = None, timeout: float = OP_TIMEOUT) -> None:
        self.path = path
        self.max_ips_per_list = max_ips_per_list
        self.max_lists_per_account = max_lists_per_account
        # Seconds one operation may wait for the store (see OP_TIMEOUT).
        self.timeout = timeout
        self._lock = threading.RLock()
        self._busy_ms = int(OPEN_TIMEOUT * 1000)
        try:
            self._db = sqlite3.connect(path, timeout=OPEN_TIMEOUT, isolation_level=None, check_same_thread=False)
            self._db.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise Unavailable(f"cannot put {path} in WAL mode (got {mode})")
            # WAL with synchronous=FULL fsyncs the log on every commit: a
            # write is durable, even across power loss, once it returns.
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("PRAGMA foreign_keys = ON")
            self._migrate()
            self._set_busy_timeout(self.timeout)
        except BaseException as exc:
            if hasattr(self, "_db"):
                self._db.close()
            if isinstance(exc, sqlite3.Error):
                raise _unavailable(exc) from None
            raise

    # -- plumbing ------------------------------------------------------------
    def _migrate(self) -> None:
        # BEGIN IMMEDIATE takes the write lock first, so two processes opening
        # a new file at once apply each migration exactly once.
        with self._lock:
            if self._db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS):
                return  # up to date: no need to wait for the write lock
            self._db.execute("BEGIN IMMEDIATE")
            try:
                version = self._db.execute("PRAGMA user_version").fetchone()[0]
                if version > len(MIGRATIONS):
                    raise Unavailable(f"{self.path} has schema version {version}, newer than this "
                                      f"sipgate's {len(MIGRATIONS)}: upgrade sipgate")
                for i in range(version, len(MIGRATIONS)):
                    for statement in MIGRATIONS[i].split(";"):
                        if statement.strip():
                            self._db.execute(statement)
                    self._db.execute(f"PRAGMA user_version = {i + 1}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _set_busy_timeout(self, seconds: float) -> None:
        ms = max(1, int(seconds * 1000))
        if ms != self._busy_ms:
            self._db.execute(f"PRAGMA busy_timeout = {ms}")
            self._busy_ms = ms

    @contextmanager
    def _locked(self, bound: float | None = None) -> Iterator[None]:
        """Hold this connection, waiting at most ``timeout`` (or ``bound``) in
        all (for the other threads using it, then for SQLite's lock), or
        raise Unavailable."""
        started = time.monotonic()
        bound = self.timeout if bound is None else bound
        if not self._lock.acquire(timeout=bound):
            raise Unavailable(f"store unavailable: busy for more than {bound:g} s")
        try:
            # Whatever is left of the bound is SQLite's busy timeout.
            try:
                self._set_busy_timeout(max(0.05, bound - (time.monotonic() - started)))
            except sqlite3.Error as exc:
                raise _unavailable(exc) from None
            yield
        finally:
            self._lock.release()

    @contextmanager
    def _write(self, bound: float | None = None) -> Iterator[_Tx]:
        with self._locked(bound):
            try:
                cur = self._db.cursor()
                cur.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise _unavailable(exc) from None
            tx = _Tx(cur, v.utcnow())
            try:
                yield tx
                if tx.changed:
                    cur.execute("UPDATE meta SET revision = revision + 1 WHERE id = 1")
                    revision = cur.execute("SELECT revision FROM meta WHERE id = 1").fetchone()[0]
                    if tx.structural or not tx.log:
                        cur.execute("INSERT INTO changes (revision, op) VALUES (?, ?)",
                                    (revision, "S" if tx.structural else "."))
                    else:
                        cur.executemany("INSERT INTO changes VALUES (?, ?, ?, ?, ?, ?)",
                                        [(revision, *row) for row in tx.log])
                    cur.execute("DELETE FROM changes WHERE revision <= ?", (revision - CHANGE_LOG_KEEP,))
                cur.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback(cur)
                raise _unavailable(exc) from None
            except BaseException:
                self._rollback(cur)
                raise

    @staticmethod
    def _rollback(cur: sqlite3.Cursor) -> None:
        try:
            cur.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Cursor]:
        with self._locked():
            try:
                cur = self._db.cursor()
                cur.execute("BEGIN")
                try:
                    yield cur
                finally:
                    cur.execute("COMMIT")
            except sqlite3.Error as exc:
                raise _unavailable(exc) from None

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    def revision(self) -> int:
        """The revision number, bumped by every write."""
        with self._read() as cur:
            return cur.execute("SELECT revision FROM meta WHERE id = 1").fetchone()[0]

    # -- the edge processes sharing the store ----------------------------------
    def report_node(self, node: str, revision: int) -> None:
        """Record that edge process ``node`` enforces ``revision`` (or a later
        one it reported) and is alive now; forget processes silent for a day.
        Waits at most NODE_REPORT_BOUND for the connection and the file's
        lock (Unavailable otherwise: the next report tries again), so that a
        heartbeat never holds this process's reads behind a locked file."""
        now = time.time()
        with self._write(NODE_REPORT_BOUND) as tx:
            tx.changed = False  # (not the store's state: the revision stays)
            tx.cur.execute("INSERT INTO nodes VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                           "revision = MAX(revision, excluded.revision), seen = excluded.seen", (node, revision, now))
            tx.cur.execute("DELETE FROM nodes WHERE seen < ?", (now - 86400,))

    def forget_node(self, node: str) -> None:
        """``node`` stops: no write waits for it any more."""
        with self._write() as tx:
            tx.changed = False
            tx.cur.execute("DELETE FROM nodes WHERE id = ?", (node,))

    def nodes_behind(self, revision: int, fresh: float, exclude: str = "") -> list[tuple[str, float]]:
        """(id, Unix time last heard from) of the edge processes heard from in
        the last ``fresh`` seconds whose table is older than ``revision``,
        but those whose id starts with ``exclude`` (a node's own processes)."""
        with self._read() as cur:
            rows = cur.execute("SELECT id, seen FROM nodes WHERE revision < ? AND seen > ? "
                               "AND (? = '' OR substr(id, 1, length(?)) <> ?) ORDER BY id",
                               (revision, time.time() - fresh, exclude, exclude, exclude)).fetchall()
        return [(r[0], float(r[1])) for r in rows]

    # -- accounts ------------------------------------------------------------
    def ensure_account(self, sid: str, friendly_name: str = "") -> Account:
        """Create the account if it does not exist; return it."""
        v.account_sid(sid)
        name = v.friendly_name(friendly_name, required=False)
        with self._write() as tx:
            account = self._ensure_account(tx, sid, name)
        return account

    def _ensure_account(self, tx: _Tx, sid: str, name: str) -> Account:
        row = tx.cur.execute("SELECT * FROM accounts WHERE sid = ?", (sid,)).fetchone()
        if row is not None:
            tx.changed = False
            return Account(row[0], row[1], _dt(row[2]), _dt(row[3]))
        tx.cur.execute("INSERT INTO accounts VALUES (?, ?, ?, ?)", (sid, name, tx.ts, tx.ts))
        return Account(sid, name, tx.now, tx.now)

    def get_account(self, sid: str) -> Account:
        with self._read() as cur:
            row = cur.execute("SELECT * FROM accounts WHERE sid = ?", (sid,)).fetchone()
        if row is None:
            raise NotFound("Account", sid)
        return Account(row[0], row[1], _dt(row[2]), _dt(row[3]))

    def _require_account(self, cur: sqlite3.Cursor, sid: str) -> None:
        if cur.execute("SELECT 1 FROM accounts WHERE sid = ?", (sid,)).fetchone() is None:
            raise NotFound("Account", sid)

    # -- trunks --------------------------------------------------------------
    @staticmethod
    def _trunk(row: sqlite3.Row | tuple, auth: bool) -> Trunk:
        values = dict(zip(_TRUNK_COLUMNS, row))
        for key in _BOOL_COLUMNS:
            values[key] = bool(values[key])
        values["date_created"] = _dt(values["date_created"])
        values["date_updated"] = _dt(values["date_updated"])
        return Trunk(auth_type="IP_ACL" if auth else "", **values)

    _TRUNK_SELECT = (f"SELECT {', '.join('t.' + c for c in _TRUNK_COLUMNS)}, "
                     "EXISTS (SELECT 1 FROM trunk_acls a WHERE a.trunk_sid = t.sid) FROM trunks t")

    def _get_trunk(self, cur: sqlite3.Cursor, account_sid: str, sid: str) -> Trunk:
        row = cur.execute(self._TRUNK_SELECT + " WHERE t.sid = ? AND t.account_sid = ?",
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
                       f"({', '.join('?' * len(_TRUNK_COLUMNS))})", [row[c] for c in _TRUNK_COLUMNS])
        tx.entry("T", None, sid)
        return self._get_trunk(tx.cur, account_sid, sid)

    @staticmethod
    def _check_domain(cur: sqlite3.Cursor, domain: str | None, own_sid: str | None) -> None:
        if domain is None:
            return
        row = cur.execute("SELECT sid FROM trunks WHERE domain_name = ?", (domain,)).fetchone()
        if row is not None and row[0] != own_sid:
            raise Conflict(CODE_DOMAIN_TAKEN, "DomainName", f"DomainName {domain!r} is already in use")

    def get_trunk(self, account_sid: str, sid: str) -> Trunk:
        with self._read() as cur:
            return self._get_trunk(cur, account_sid, sid)

    def list_trunks(self, account_sid: str, *, limit: int, offset: int = 0) -> list[Trunk]:
        v.page(limit, offset)
        with self._read() as cur:
            rows = cur.execute(self._TRUNK_SELECT + " WHERE t.account_sid = ? ORDER BY t.date_created, t.rowid "
                               "LIMIT ? OFFSET ?", (account_sid, limit, offset)).fetchall()
        return [self._trunk(r[:-1], r[-1]) for r in rows]

    def count_trunks(self, account_sid: str) -> int:
        with self._read() as cur:
            return cur.execute("SELECT COUNT(*) FROM trunks WHERE account_sid = ?", (account_sid,)).fetchone()[0]

    def update_trunk(self, account_sid: str, sid: str, **fields: Any) -> Trunk:
        values = v.trunk_fields(fields)
        with self._write() as tx:
            current = self._get_trunk(tx.cur, account_sid, sid)
            if "domain_name" in values:
                self._check_domain(tx.cur, values["domain_name"], sid)
                if values["domain_name"] != current.domain_name:
                    tx.entry("T", None, sid)
            if values:
                sets = ", ".join(f"{k} = ?" for k in values)
                tx.cur.execute(f"UPDATE trunks SET {sets}, date_updated = ? WHERE sid = ?",
                               [*values.values(), tx.ts, sid])
            return self._get_trunk(tx.cur, account_sid, sid)

    def delete_trunk(self, account_sid: str, sid: str) -> None:
        """Delete a trunk and its list associations (the lists stay)."""
        with self._write() as tx:
            self._get_trunk(tx.cur, account_sid, sid)
            for (acl_sid,) in tx.cur.execute("SELECT acl_sid FROM trunk_acls WHERE trunk_sid = ? ORDER BY rowid",
                                             (sid,)).fetchall():
                tx.entry("D", acl_sid, sid)
            tx.cur.execute("DELETE FROM trunks WHERE sid = ?", (sid,))
            tx.entry("R", None, sid)

    def find_trunk_by_domain(self, domain_name: str) -> Trunk | None:
        with self._read() as cur:
            row = cur.execute(self._TRUNK_SELECT + " WHERE t.domain_name = ?", (domain_name.lower(),)).fetchone()
        return None if row is None else self._trunk(row[:-1], row[-1])

    # -- lists ---------------------------------------------------------------
    @staticmethod
    def _acl(row: tuple) -> IpAccessControlList:
        return IpAccessControlList(row[0], row[1], row[2], _dt(row[3]), _dt(row[4]))

    def _get_acl(self, cur: sqlite3.Cursor, account_sid: str, sid: str) -> IpAccessControlList:
        row = cur.execute("SELECT sid, account_sid, friendly_name, date_created, date_updated FROM acls "
                          "WHERE sid = ? AND account_sid = ?", (sid, account_sid)).fetchone()
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
            n = tx.cur.execute("SELECT COUNT(*) FROM acls WHERE account_sid = ?", (account_sid,)).fetchone()[0]
            if n >= self.max_lists_per_account:
                raise LimitExceeded(CODE_LISTS_PER_ACCOUNT, "FriendlyName",
                                    f"the account already has the maximum of {self.max_lists_per_account} "
                                    "IP access control lists")
        sid = v.new_sid("AL")
        tx.cur.execute("INSERT INTO acls VALUES (?, ?, ?, ?, ?)", (sid, account_sid, name, tx.ts, tx.ts))
        return IpAccessControlList(sid, account_sid, name, tx.now, tx.now)

    def get_acl(self, account_sid: str, sid: str) -> IpAccessControlList:
        with self._read() as cur:
            return self._get_acl(cur, account_sid, sid)

    def list_acls(self, account_sid: str, *, limit: int, offset: int = 0) -> list[IpAccessControlList]:
        v.page(limit, offset)
        with self._read() as cur:
            rows = cur.execute("SELECT sid, account_sid, friendly_name, date_created, date_updated FROM acls "
                               "WHERE account_sid = ? ORDER BY date_created, rowid LIMIT ? OFFSET ?",
                               (account_sid, limit, offset)).fetchall()
        return [self._acl(r) for r in rows]

    def count_acls(self, account_sid: str) -> int:
        with self._read() as cur:
            return cur.execute("SELECT COUNT(*) FROM acls WHERE account_sid = ?", (account_sid,)).fetchone()[0]

    def update_acl(self, account_sid: str, sid: str, friendly_name: str) -> IpAccessControlList:
        name = v.friendly_name(friendly_name, required=True)
        with self._write() as tx:
            if self._get_acl(tx.cur, account_sid, sid).friendly_name != name:
                tx.entry("N", sid)  # the name rides in the compiled entries
            tx.cur.execute("UPDATE acls SET friendly_name = ?, date_updated = ? WHERE sid = ?", (name, tx.ts, sid))
            return self._get_acl(tx.cur, account_sid, sid)

    def delete_acl(self, account_sid: str, sid: str) -> None:
        """Delete a list, its addresses and its associations with any trunk."""
        with self._write() as tx:
            self._get_acl(tx.cur, account_sid, sid)
            for (trunk_sid,) in tx.cur.execute("SELECT trunk_sid FROM trunk_acls WHERE acl_sid = ? ORDER BY rowid",
                                               (sid,)).fetchall():
                tx.entry("D", sid, trunk_sid)
            tx.log.extend(("-", sid, ip_sid, address, prefix) for ip_sid, address, prefix in tx.cur.execute(
                "SELECT sid, ip_address, cidr_prefix_length FROM ip_addresses WHERE acl_sid = ?", (sid,)))
            tx.cur.execute("DELETE FROM acls WHERE sid = ?", (sid,))

    # -- addresses -----------------------------------------------------------
    _IP_SELECT = ("SELECT sid, account_sid, acl_sid, friendly_name, ip_address, cidr_prefix_length, "
                  "date_created, date_updated FROM ip_addresses")

    @staticmethod
    def _ip(row: tuple) -> IpAddress:
        return IpAddress(row[0], row[1], row[2], row[3], row[4], row[5], _dt(row[6]), _dt(row[7]))

    def _get_ip(self, cur: sqlite3.Cursor, account_sid: str, acl_sid: str, sid: str) -> IpAddress:
        row = cur.execute(self._IP_SELECT + " WHERE sid = ? AND acl_sid = ? AND account_sid = ?",
                          (sid, acl_sid, account_sid)).fetchone()
        if row is None:
            raise NotFound("IpAddress", sid)
        return self._ip(row)

    @staticmethod
    def _check_duplicate(cur: sqlite3.Cursor, acl_sid: str, network: str, own_sid: str | None) -> None:
        row = cur.execute("SELECT sid FROM ip_addresses WHERE acl_sid = ? AND network = ?",
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
            n = tx.cur.execute("SELECT COUNT(*) FROM ip_addresses WHERE acl_sid = ?", (acl_sid,)).fetchone()[0]
            if n >= self.max_ips_per_list:
                raise list_full(self.max_ips_per_list)
        sid = v.new_sid("IP")
        tx.cur.execute("INSERT INTO ip_addresses VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (sid, account_sid, acl_sid, name, entry.address, entry.prefix, entry.network, tx.ts, tx.ts))
        tx.entry("+", acl_sid, sid, entry.address, entry.prefix)
        return IpAddress(sid, account_sid, acl_sid, name, entry.address, entry.prefix, tx.now, tx.now)

    def _create_ips(self, tx: _Tx, account_sid: str, acl_sid: str, rows: list[tuple[str, v.IpEntry]]) -> None:
        """_create_ip for many addresses of one list at once (the seed's bulk
        load), which the caller has checked against the list and its limit."""
        self._get_acl(tx.cur, account_sid, acl_sid)
        # The new SIDs in ascending order, given in file order: the rows then
        # go into the SID and the list indexes in order, not at random
        # places (most of a million-row insert was page misses).
        sids = v.new_sids("IP", len(rows))
        values = []
        for sid, (name, entry) in zip(sids, rows):
            values.append((sid, account_sid, acl_sid, name, entry.address, entry.prefix, entry.network, tx.ts, tx.ts))
            if not tx.structural:  # (a structural change logs no entries: the edge recompiles)
                tx.entry("+", acl_sid, sid, entry.address, entry.prefix)
        # The (acl_sid, network) index takes the rows in random order: with
        # SQLite's default 2 MiB page cache, most of a large insert was
        # page misses.  A cache sized to the rows (256 bytes each, at most
        # 1 GiB) for the insert, then the connection's own again:
        # benchmarks/bench_seed.py.
        before = None
        if len(values) > _BULK_ROWS:
            before = tx.cur.execute("PRAGMA cache_size").fetchone()[0]
            tx.cur.execute(f"PRAGMA cache_size = {-min(len(values) // 4, 1 << 20)}")
        try:
            tx.cur.executemany("INSERT INTO ip_addresses VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", values)
        finally:
            if before is not None:
                tx.cur.execute(f"PRAGMA cache_size = {int(before)}")

    def get_ip_address(self, account_sid: str, acl_sid: str, sid: str) -> IpAddress:
        with self._read() as cur:
            self._get_acl(cur, account_sid, acl_sid)
            return self._get_ip(cur, account_sid, acl_sid, sid)

    def list_ip_addresses(self, account_sid: str, acl_sid: str, *, limit: int, offset: int = 0) -> list[IpAddress]:
        v.page(limit, offset)
        with self._read() as cur:
            self._get_acl(cur, account_sid, acl_sid)
            rows = cur.execute(self._IP_SELECT + " WHERE acl_sid = ? ORDER BY date_created, rowid LIMIT ? OFFSET ?",
                               (acl_sid, limit, offset)).fetchall()
        return [self._ip(r) for r in rows]

    def count_ip_addresses(self, account_sid: str, acl_sid: str) -> int:
        with self._read() as cur:
            self._get_acl(cur, account_sid, acl_sid)
            return cur.execute("SELECT COUNT(*) FROM ip_addresses WHERE acl_sid = ?", (acl_sid,)).fetchone()[0]

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
            tx.cur.execute("UPDATE ip_addresses SET friendly_name = ?, ip_address = ?, cidr_prefix_length = ?, "
                           "network = ?, date_updated = ? WHERE sid = ?",
                           (name, entry.address, entry.prefix, entry.network, tx.ts, sid))
            if (entry.address, entry.prefix) != (current.ip_address, current.cidr_prefix_length):
                tx.entry("-", acl_sid, sid, current.ip_address, current.cidr_prefix_length)
                tx.entry("+", acl_sid, sid, entry.address, entry.prefix)
            return self._get_ip(tx.cur, account_sid, acl_sid, sid)

    def delete_ip_address(self, account_sid: str, acl_sid: str, sid: str) -> None:
        with self._write() as tx:
            self._get_acl(tx.cur, account_sid, acl_sid)
            ip = self._get_ip(tx.cur, account_sid, acl_sid, sid)
            tx.cur.execute("DELETE FROM ip_addresses WHERE sid = ?", (sid,))
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
        if tx.cur.execute("SELECT 1 FROM trunk_acls WHERE trunk_sid = ? AND acl_sid = ?",
                          (trunk_sid, acl_sid)).fetchone() is not None:
            raise Conflict(CODE_ACL_ALREADY_ASSOCIATED, "IpAccessControlListSid",
                           f"IpAccessControlList {acl_sid} is already associated with trunk {trunk_sid}")
        tx.cur.execute("INSERT INTO trunk_acls VALUES (?, ?, ?, ?, ?)",
                       (trunk_sid, acl_sid, account_sid, tx.ts, tx.ts))
        tx.entry("A", acl_sid, trunk_sid)  # (the trunk SID rides in the ip_sid column)
        return TrunkAcl(account_sid, trunk_sid, acl_sid, acl.friendly_name, tx.now, tx.now)

    def get_trunk_acl(self, account_sid: str, trunk_sid: str, acl_sid: str) -> TrunkAcl:
        with self._read() as cur:
            self._get_trunk(cur, account_sid, trunk_sid)
            row = cur.execute(self._ASSOC_SELECT + " WHERE a.trunk_sid = ? AND a.acl_sid = ?",
                              (trunk_sid, acl_sid)).fetchone()
        if row is None:
            raise NotFound("IpAccessControlList", acl_sid)
        return self._assoc(row)

    def list_trunk_acls(self, account_sid: str, trunk_sid: str, *, limit: int, offset: int = 0) -> list[TrunkAcl]:
        v.page(limit, offset)
        with self._read() as cur:
            self._get_trunk(cur, account_sid, trunk_sid)
            rows = cur.execute(self._ASSOC_SELECT + " WHERE a.trunk_sid = ? ORDER BY a.rowid LIMIT ? OFFSET ?",
                               (trunk_sid, limit, offset)).fetchall()
        return [self._assoc(r) for r in rows]

    def count_trunk_acls(self, account_sid: str, trunk_sid: str) -> int:
        with self._read() as cur:
            self._get_trunk(cur, account_sid, trunk_sid)
            return cur.execute("SELECT COUNT(*) FROM trunk_acls WHERE trunk_sid = ?", (trunk_sid,)).fetchone()[0]

    def dissociate(self, account_sid: str, trunk_sid: str, acl_sid: str) -> None:
        with self._write() as tx:
            self._get_trunk(tx.cur, account_sid, trunk_sid)
            tx.cur.execute("DELETE FROM trunk_acls WHERE trunk_sid = ? AND acl_sid = ?", (trunk_sid, acl_sid))
            if tx.cur.rowcount == 0:
                raise NotFound("IpAccessControlList", acl_sid)
            tx.entry("D", acl_sid, trunk_sid)

    # -- the edge's view -----------------------------------------------------
    def changes_since(self, revision: int) -> Delta | None:
        """What changed after ``revision`` (see model.Delta), or None.

        None when the log no longer reaches back that far or a bulk load
        ("S") happened since: the caller then compiles a full snapshot.
        """
        with self._read() as cur:
            current = cur.execute("SELECT revision FROM meta WHERE id = 1").fetchone()[0]
            if current == revision:
                return Delta(current, (), {}, {})
            rows = cur.execute("SELECT revision, op, acl_sid, ip_sid, address, prefix FROM changes "
                               "WHERE revision > ? ORDER BY rowid", (revision,)).fetchall()
            if current < revision or len({r[0] for r in rows}) != current - revision \
                    or any(r[1] == "S" for r in rows):
                return None
            lists: dict[str, tuple[str | None, tuple[AclEntry, ...]]] = {}
            relinked = {r[2] for r in rows if r[1] in ("A", "D")}
            for acl_sid in relinked | {r[2] for r in rows if r[1] == "N"}:
                name = cur.execute("SELECT friendly_name FROM acls WHERE sid = ?", (acl_sid,)).fetchone()
                if name is None or acl_sid not in relinked:  # a rename needs no entries
                    lists[acl_sid] = (name and name[0], ())
                    continue
                lists[acl_sid] = (name[0], tuple(AclEntry(*e) for e in cur.execute(
                    "SELECT sid, ip_address, cidr_prefix_length FROM ip_addresses WHERE acl_sid = ? "
                    "ORDER BY rowid", (acl_sid,))))
            trunks: dict[str, tuple[str, str | None] | None] = {}
            for trunk_sid in {r[3] for r in rows if r[1] in ("T", "R")}:
                row = cur.execute("SELECT account_sid, domain_name FROM trunks WHERE sid = ?",
                                  (trunk_sid,)).fetchone()
                trunks[trunk_sid] = None if row is None else (row[0], row[1])
        return Delta(current, tuple(r[1:] for r in rows if r[1] != "."), lists, trunks)

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
            names = dict(cur.execute("SELECT sid, friendly_name FROM acls"))
            entries: dict[str, list[AclEntry]] = {sid: [] for sid in names}
            for ip_sid, acl_sid, address, prefix in cur.execute(
                    "SELECT sid, acl_sid, ip_address, cidr_prefix_length FROM ip_addresses ORDER BY rowid"):
                entries[acl_sid].append(AclEntry(ip_sid, address, prefix))
        return Snapshot(revision, trunks, {k: tuple(e) for k, e in entries.items()}, names)
