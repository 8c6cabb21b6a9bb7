"""Store fixtures parametrised over backends: SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pgcluster import PgCluster, pg_cluster, pg_dsn

from sipgate.store import open_store
from sipgate.store.postgres import PostgresStore

A = "AC" + "a" * 32
B = "AC" + "b" * 32

_SESSION_FIXTURES = (pg_cluster, pg_dsn)  # imported for pytest: the PostgreSQL cluster of the run

# A factory opens a fresh, empty store under ``directory`` with the given limits.
StoreFactory = Callable[..., Any]


# Backend factories take the test's request, a fresh directory and a list
# of cleanups that store_factory runs after closing the stores.
def sqlite_factory(request: pytest.FixtureRequest, directory: Path, cleanups: list[Callable[[], None]],
                   **limits: Any) -> Any:
    """A new SQLite store in its own file."""
    return open_store(f"sqlite:{directory / 'store.db'}", **limits)


def postgres_factory(request: pytest.FixtureRequest, directory: Path, cleanups: list[Callable[[], None]],
                     **limits: Any) -> Any:
    """A new PostgreSQL store in its own database of the session's cluster."""
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    dsn = cluster.create_database()
    try:
        store = PostgresStore(dsn, **limits)
    except BaseException:
        cluster.drop_database(dsn)
        raise
    cleanups.append(lambda: cluster.drop_database(dsn))
    return store


BACKENDS = [pytest.param(sqlite_factory, id="sqlite"), pytest.param(postgres_factory, id="postgres")]


@pytest.fixture(params=BACKENDS)
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Opens stores of one backend (each call a fresh one); closes them after the test."""
    opened: list[Any] = []
    cleanups: list[Callable[[], None]] = []
    counter = iter(range(1_000_000))

    def make(**limits: Any) -> Any:
        directory = tmp_path / f"s{next(counter)}"
        directory.mkdir()
        store = request.param(request, directory, cleanups, **limits)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()
    for cleanup in cleanups:
        cleanup()


@pytest.fixture
def store(store_factory: StoreFactory) -> Any:
    """A fresh store of the backend under test with accounts A and B."""
    store = store_factory()
    store.ensure_account(A, "Account A")
    store.ensure_account(B, "Account B")
    return store
