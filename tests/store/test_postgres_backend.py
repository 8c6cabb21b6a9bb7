"""PostgreSQL specifics: concurrent migrations, concurrent writers, outages, durability, NOTIFY.

The contract itself (test_contract.py, test_stateful.py, test_seed.py) runs
against PostgreSQL through conftest's BACKENDS; these are what only a
server backend has.  Every server here is a real postmaster on 127.0.0.1.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time

import psycopg
import pytest
from pgcluster import PgCluster

from sipgate.store import NotFound, Unavailable
from sipgate.store.postgres import MIGRATIONS, NOTIFY_CHANNEL, PostgresStore

A = "AC" + "a" * 32


@pytest.fixture
def dsn(pg_cluster: PgCluster):
    """A fresh database in the session cluster, dropped afterwards."""
    dsn = pg_cluster.create_database()
    yield dsn
    pg_cluster.drop_database(dsn)


@pytest.fixture
def own_cluster():
    """A cluster of this test's own, to stop and start at will."""
    cluster = PgCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


def _one(dsn: str, sql: str):
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchone()[0]


# -- migrations ------------------------------------------------------------------

def test_processes_opening_a_new_database_at_once_migrate_it_once(dsn):
    start_at = time.time() + 1.5  # every child imports first, then all open at once
    code = textwrap.dedent(f"""
        import sys, time
        from sipgate.store.postgres import PostgresStore
        time.sleep(max(0, {start_at!r} - time.time()))
        s = PostgresStore({dsn!r})
        s.ensure_account("AC" + "%032x" % int(sys.argv[1]))
        s.close()
    """)
    children = [subprocess.Popen([sys.executable, "-c", code, str(n)], stderr=subprocess.PIPE, text=True)
                for n in range(6)]
    for child in children:
        _, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
    assert _one(dsn, "SELECT version FROM sipgate_schema") == len(MIGRATIONS)
    assert _one(dsn, "SELECT COUNT(*) FROM sipgate_schema") == 1
    assert _one(dsn, "SELECT COUNT(*) FROM meta") == 1  # migration 1's INSERT ran once
    assert _one(dsn, "SELECT COUNT(*) FROM accounts") == 6
    assert _one(dsn, "SELECT revision FROM meta") == 6


def test_threads_opening_a_new_database_at_once_migrate_it_once(dsn):
    barrier = threading.Barrier(8)
    stores: list[PostgresStore] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            barrier.wait(10)
            stores.append(PostgresStore(dsn))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    try:
        assert errors == [] and len(stores) == 8
        stores[0].ensure_account(A)
        assert all(s.revision() == 1 for s in stores)
        assert _one(dsn, "SELECT COUNT(*) FROM meta") == 1
    finally:
        for s in stores:
            s.close()


def test_reopen_keeps_data_and_newer_schema_is_refused(dsn):
    s = PostgresStore(dsn)
    s.ensure_account(A)
    acl = s.create_acl(A, "kept")
    rev = s.revision()
    s.close()
    s = PostgresStore(dsn)
    try:
        assert s.get_acl(A, acl.sid) == acl and s.revision() == rev
    finally:
        s.close()
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE sipgate_schema SET version = %s", (len(MIGRATIONS) + 1,))
    with pytest.raises(Unavailable, match="schema"):
        PostgresStore(dsn)


# -- concurrent writers ----------------------------------------------------------

def test_writers_on_separate_connections_keep_revisions_and_log_complete(dsn):
    stores = [PostgresStore(dsn) for _ in range(3)]
    try:
        stores[0].ensure_account(A)
        acl = stores[0].create_acl(A, "shared")
        trunk = stores[0].create_trunk(A, domain_name="t.example")
        stores[0].associate(A, trunk.sid, acl.sid)
        base = stores[0].revision()
        made: list[list[str]] = [[] for _ in stores]
        errors: list[BaseException] = []
        barrier = threading.Barrier(len(stores))

        def work(n: int) -> None:
            try:
                barrier.wait(10)
                for i in range(20):
                    ip = stores[n].create_ip_address(A, acl.sid, friendly_name="x", ip_address=f"10.{n}.{i}.1")
                    made[n].append(ip.sid)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(len(stores))]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        assert errors == []
        total = sum(len(m) for m in made)
        assert total == 60 and stores[1].revision() == base + total
        with psycopg.connect(dsn) as conn:
            log = conn.execute("SELECT revision, op, ip_sid FROM changes WHERE revision > %s ORDER BY rowid",
                               (base,)).fetchall()
        revisions = [r[0] for r in log]
        assert revisions == list(range(base + 1, base + total + 1))  # one row each, in commit order
        assert {r[2] for r in log} == {sid for m in made for sid in m} and {r[1] for r in log} == {"+"}
        delta = stores[2].changes_since(base)
        assert delta is not None and delta.revision == base + total and len(delta.changes) == total
        assert [c[2] for c in delta.changes] == [r[2] for r in log]
        assert len(stores[2].snapshot().acls[acl.sid]) == total
    finally:
        for s in stores:
            s.close()


def test_same_domain_from_several_connections_at_once_conflicts_cleanly(dsn):
    """Writers are serialised: the checks see each other's commits (409, never a raw unique violation)."""
    from sipgate.store import Conflict

    stores = [PostgresStore(dsn) for _ in range(4)]
    rounds = 15
    try:
        stores[0].ensure_account(A)
        barrier = threading.Barrier(len(stores))
        outcomes: list[list[str]] = [[] for _ in range(rounds)]

        def work(s: PostgresStore) -> None:
            for r in range(rounds):
                barrier.wait(10)
                try:
                    s.create_trunk(A, domain_name=f"race{r}.example")
                    outcomes[r].append("made")
                except Conflict as exc:
                    outcomes[r].append(f"conflict {exc.code}")
                except Exception as exc:  # noqa: BLE001 - the failure this test is about
                    outcomes[r].append(repr(exc))

        threads = [threading.Thread(target=work, args=(s,)) for s in stores]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        for r in range(rounds):
            assert sorted(outcomes[r]) == ["conflict 21248"] * 3 + ["made"], (r, outcomes[r])
        assert stores[0].count_trunks(A) == rounds
    finally:
        for s in stores:
            s.close()


def test_a_held_lock_fails_writes_within_the_bound_and_reads_go_on(dsn):
    s = PostgresStore(dsn, timeout=0.5)
    try:
        s.ensure_account(A)
        with psycopg.connect(dsn) as blocker:
            blocker.execute("SELECT revision FROM meta FOR UPDATE")  # an open transaction holds the row
            started = time.monotonic()
            with pytest.raises(Unavailable):
                s.create_acl(A, "blocked")
            assert time.monotonic() - started < 3
            assert s.revision() == 1 and s.count_acls(A) == 0  # reads do not wait for writers
        assert s.create_acl(A, "after").friendly_name == "after"
        assert s.revision() == 2
    finally:
        s.close()


def test_reads_go_on_beside_a_write_waiting_for_another_writer(dsn):
    """The pool: while one thread's write waits for the meta row another
    connection holds, other threads' reads are answered at once (one shared
    connection made them wait for the write, then fail as busy); the write
    goes through once the other writer commits."""
    s = PostgresStore(dsn, timeout=3.0)
    try:
        s.ensure_account(A)
        with psycopg.connect(dsn) as blocker:
            blocker.execute("BEGIN")
            blocker.execute("SELECT revision FROM meta FOR UPDATE")
            written: list = []
            writer = threading.Thread(target=lambda: written.append(s.create_acl(A, "waits")))
            writer.start()
            time.sleep(0.3)  # (the write is now waiting for the row)
            started = time.monotonic()
            reads = []
            readers = [threading.Thread(target=lambda: reads.append((s.revision(), s.count_acls(A))))
                       for _ in range(3)]
            for t in readers:
                t.start()
            for t in readers:
                t.join(5)
            assert reads == [(1, 0)] * 3 and time.monotonic() - started < 1.0 and written == []
            blocker.execute("COMMIT")
        writer.join(5)
        assert [a.friendly_name for a in written] == ["waits"] and s.revision() == 2
        assert 1 <= len(s._idle) <= 4  # (kept for the next operations)
    finally:
        s.close()
    assert s._idle == []


def test_a_full_pool_makes_an_operation_wait_its_bound_then_fail(dsn):
    from sipgate.store.postgres import POOL_SIZE

    s = PostgresStore(dsn, timeout=0.5)
    try:
        s.ensure_account(A)
        held = [s._held() for _ in range(POOL_SIZE)]
        for h in held:
            h.__enter__()
        try:
            started = time.monotonic()
            with pytest.raises(Unavailable, match="busy"):
                s.revision()
            assert 0.4 < time.monotonic() - started < 2
        finally:
            for h in held:
                h.__exit__(None, None, None)
        assert s.revision() == 1
    finally:
        s.close()


# -- outages ---------------------------------------------------------------------

def test_stopped_server_is_unavailable_quickly_then_the_same_store_reconnects(own_cluster):
    s = PostgresStore(own_cluster.create_database())
    try:
        s.ensure_account(A)
        acl = s.create_acl(A, "before")
        own_cluster.stop()
        for call in (s.revision, lambda: s.create_acl(A, "during"), s.snapshot, lambda: s.get_acl(A, acl.sid)):
            started = time.monotonic()
            with pytest.raises(Unavailable):
                call()
            assert time.monotonic() - started < 5
        own_cluster.start()
        assert s.get_acl(A, acl.sid) == acl  # the same object, a new connection
        s.create_acl(A, "after")
        assert s.count_acls(A) == 2 and s.revision() == 3
    finally:
        s.close()


def test_a_killed_connection_is_replaced_transparently(dsn):
    s = PostgresStore(dsn)
    try:
        s.ensure_account(A)
        (conn,) = s._idle  # (one operation at a time so far: one connection)
        pid = conn.info.backend_pid
        with psycopg.connect(dsn) as admin:
            assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
        time.sleep(0.2)
        assert s.get_account(A).sid == A
        (conn,) = s._idle
        assert conn.info.backend_pid != pid
        s.create_acl(A, "x")
        assert s.revision() == 2
    finally:
        s.close()


def test_a_write_is_durable_when_it_returns(own_cluster):
    dsn = own_cluster.create_database()
    s = PostgresStore(dsn)
    s.ensure_account(A)
    acl = s.create_acl(A, "survives")
    s.close()
    # Immediate shutdown: no checkpoint, the restart replays the WAL.
    proc = own_cluster.proc
    proc.send_signal(signal.SIGQUIT)
    proc.wait(20)
    own_cluster.proc = None
    own_cluster.start()
    s = PostgresStore(dsn)
    try:
        assert s.get_acl(A, acl.sid).friendly_name == "survives" and s.revision() == 2
    finally:
        s.close()


def test_closed_store_fails_fast(dsn):
    s = PostgresStore(dsn)
    s.close()
    started = time.monotonic()
    with pytest.raises(Unavailable, match="closed"):
        s.revision()
    with pytest.raises(Unavailable):
        s.wait_for_change(5)
    assert time.monotonic() - started < 1


def test_url_dsn_and_its_own_options_are_kept(pg_cluster, dsn):
    from psycopg.conninfo import conninfo_to_dict

    name = conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE SCHEMA tenant_x")
    url = (f"postgresql://{pg_cluster.user}@127.0.0.1:{pg_cluster.port}/{name}"
           "?options=-c%20search_path%3Dtenant_x")
    s = PostgresStore(url)
    try:
        s.ensure_account(A)
        assert s.get_account(A).sid == A
    finally:
        s.close()
    assert _one(dsn, "SELECT COUNT(*) FROM tenant_x.accounts") == 1  # the DSN's search_path held
    assert _one(dsn, "SELECT to_regclass('public.accounts') IS NULL")


def test_open_store_opens_postgresql_urls(pg_cluster, dsn):
    from psycopg.conninfo import conninfo_to_dict

    from sipgate.store import open_store

    name = conninfo_to_dict(dsn)["dbname"]
    s = open_store(f"postgresql://{pg_cluster.user}@127.0.0.1:{pg_cluster.port}/{name}", max_lists_per_account=1)
    try:
        assert isinstance(s, PostgresStore) and s.max_lists_per_account == 1
        s.ensure_account(A)
        assert s.revision() == 1
    finally:
        s.close()


def test_unreachable_server_is_unavailable():
    with pytest.raises(Unavailable):
        PostgresStore("host=127.0.0.1 port=1 user=postgres dbname=postgres")


# -- change notification -----------------------------------------------------------

def test_a_write_wakes_a_listener_on_another_store_within_200ms(dsn):
    writer, reader = PostgresStore(dsn), PostgresStore(dsn)
    try:
        writer.ensure_account(A)
        assert reader.wait_for_change(0.05) is None  # connects and listens; nothing yet
        woke: list[tuple[int, float]] = []
        ready = threading.Event()

        def listen() -> None:
            ready.set()
            revision = reader.wait_for_change(5)
            woke.append((revision, time.monotonic()))

        th = threading.Thread(target=listen)
        th.start()
        ready.wait(5)
        time.sleep(0.05)
        acl = writer.create_acl(A, "wake up")
        returned = time.monotonic()
        th.join(10)
        assert woke and woke[0][0] == writer.revision() == 2
        assert woke[0][1] - returned < 0.2
        # A failed write notifies nothing.
        with pytest.raises(NotFound):
            writer.delete_acl(A, "AL" + "0" * 32)
        assert reader.wait_for_change(0.3) is None
        # listen(): a callback per committed write, from a thread.
        got: list[int] = []
        stop = reader.listen(got.append, poll=0.2)
        try:
            writer.update_acl(A, acl.sid, "renamed")
            writer.delete_acl(A, acl.sid)
            deadline = time.monotonic() + 5
            while len(got) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            stop()
        assert got == [3, 4]
    finally:
        writer.close()
        reader.close()


def test_notify_payload_is_the_committed_revision(dsn):
    s = PostgresStore(dsn)
    try:
        with psycopg.connect(dsn, autocommit=True) as listener:
            listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
            s.ensure_account(A)
            s.ensure_account(A)  # no change: no bump, no notification
            s.create_trunk(A)
            payloads = [n.payload for n in listener.notifies(timeout=1, stop_after=3)]
        assert payloads == ["1", "2"]
    finally:
        s.close()


def test_notifications_that_arrive_together_are_each_returned(dsn):
    # Writes committed while nobody waits reach the listening connection
    # together and are read from the socket in one go; every one of them
    # must come back, one per call, in order (returning after the first
    # once dropped the rest of that read).
    writer, reader = PostgresStore(dsn), PostgresStore(dsn)
    try:
        writer.ensure_account(A)
        assert reader.wait_for_change(0.05) is None  # connects and listens
        acl = writer.create_acl(A, "batch")
        writer.update_acl(A, acl.sid, "batch 2")
        writer.delete_acl(A, acl.sid)
        time.sleep(0.3)  # all three are on the listener's socket by now
        got = [reader.wait_for_change(1) for _ in range(3)]
        assert got == [2, 3, 4] and writer.revision() == 4
        assert reader.wait_for_change(0.1) is None
    finally:
        writer.close()
        reader.close()
