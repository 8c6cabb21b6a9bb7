"""SQLite specifics: pragmas, migrations under concurrent opens, unreachable files."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap

import pytest

from sipgate.store import SqliteStore, Unavailable, open_store
from sipgate.store.sqlite import MIGRATIONS

A = "AC" + "a" * 32


def test_connection_pragmas(tmp_path):
    s = open_store(str(tmp_path / "p.db"))
    try:
        db = s._db
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert db.execute("PRAGMA busy_timeout").fetchone()[0] > 0
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    finally:
        s.close()


def test_reopen_keeps_data_and_runs_no_migration(tmp_path):
    path = str(tmp_path / "r.db")
    s = open_store(path)
    s.ensure_account(A)
    acl = s.create_acl(A, "kept")
    rev = s.revision()
    s.close()
    s = open_store(f"sqlite://{path}")
    try:
        assert s.get_acl(A, acl.sid) == acl and s.revision() == rev
    finally:
        s.close()


def test_processes_opening_a_new_file_at_once_migrate_it_once(tmp_path):
    path = tmp_path / "race.db"
    code = textwrap.dedent(f"""
        import sys
        from sipgate.store import open_store
        s = open_store({str(path)!r})
        s.ensure_account("AC" + "%032x" % int(sys.argv[1]))
        s.close()
    """)
    children = [subprocess.Popen([sys.executable, "-c", code, str(n)], stderr=subprocess.PIPE, text=True)
                for n in range(6)]
    for child in children:
        _, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert db.execute("SELECT COUNT(*) FROM accounts").fetchone()[0] == 6
        assert db.execute("SELECT revision FROM meta").fetchone()[0] == 6
    finally:
        db.close()


def test_unopenable_path_is_unavailable(tmp_path):
    with pytest.raises(Unavailable):
        SqliteStore(str(tmp_path / "no" / "such" / "dir" / "x.db"))


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "future.db"
    open_store(str(path)).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.commit()
    db.close()
    with pytest.raises(Unavailable, match="schema"):
        open_store(str(path))


@pytest.mark.parametrize("url", ["mysql://x", "sqlite:", "postgresx://db/sipgate"])
def test_open_store_rejects(url):
    with pytest.raises(ValueError):
        open_store(url)


def test_raw_tables_hold_nothing_dangling_after_cascades(tmp_path):
    path = tmp_path / "c.db"
    s = open_store(str(path))
    s.ensure_account(A)
    trunks = [s.create_trunk(A, domain_name=f"t{i}.example") for i in range(3)]
    lists = [s.create_acl(A, f"l{i}") for i in range(3)]
    for acl in lists:
        s.create_ip_address(A, acl.sid, friendly_name="x", ip_address="10.0.0.1")
        for t in trunks:
            s.associate(A, t.sid, acl.sid)
    s.delete_acl(A, lists[0].sid)
    s.delete_trunk(A, trunks[0].sid)
    s.close()
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        orphans = db.execute(
            "SELECT (SELECT COUNT(*) FROM ip_addresses WHERE acl_sid NOT IN (SELECT sid FROM acls)),"
            " (SELECT COUNT(*) FROM trunk_acls WHERE acl_sid NOT IN (SELECT sid FROM acls)"
            "   OR trunk_sid NOT IN (SELECT sid FROM trunks))").fetchone()
        assert orphans == (0, 0)
        assert db.execute("SELECT COUNT(*) FROM trunk_acls").fetchone()[0] == 4  # 2 trunks x 2 lists
        assert db.execute("SELECT COUNT(*) FROM ip_addresses").fetchone()[0] == 2
    finally:
        db.close()
