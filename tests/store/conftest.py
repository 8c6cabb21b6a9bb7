"""Store fixtures parametrised over backends (SQLite now; PostgreSQL joins BACKENDS later)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sipgate.store import open_store

A = "AC" + "a" * 32
B = "AC" + "b" * 32

# A factory opens a fresh, empty store under ``directory`` with the given limits.
StoreFactory = Callable[..., Any]


def sqlite_factory(directory: Path, **limits: Any) -> Any:
    """A new SQLite store in its own file."""
    return open_store(f"sqlite:{directory / 'store.db'}", **limits)


BACKENDS = [pytest.param(sqlite_factory, id="sqlite")]


@pytest.fixture(params=BACKENDS)
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Opens stores of one backend (each call a fresh one); closes them after the test."""
    opened: list[Any] = []
    counter = iter(range(1_000_000))

    def make(**limits: Any) -> Any:
        directory = tmp_path / f"s{next(counter)}"
        directory.mkdir()
        store = request.param(directory, **limits)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(store_factory: StoreFactory) -> Any:
    """A fresh store of the backend under test with accounts A and B."""
    store = store_factory()
    store.ensure_account(A, "Account A")
    store.ensure_account(B, "Account B")
    return store
