"""The store: accounts, trunks, IP access control lists, their addresses."""

from __future__ import annotations

from typing import Any

from sipgate.store.model import *  # noqa: F403  (the store's public values and errors)
from sipgate.store.model import __all__ as _model_all
from sipgate.store.sqlite import SqliteStore

__all__ = [*_model_all, "SqliteStore", "open_store"]


def open_store(url: str, **limits: Any) -> Any:
    """Open the store named by ``url``.

    ``sqlite:///abs/path.db``, ``sqlite:relative/path.db`` or a bare path;
    ``postgresql://user@host:port/dbname`` (or ``postgres://``, any libpq
    URL) for PostgreSQL (sipgate.store.postgres.PostgresStore).
    ``limits`` are ``max_ips_per_list`` and ``max_lists_per_account``.
    """
    if url.startswith(("postgresql://", "postgres://")):
        from sipgate.store.postgres import PostgresStore  # psycopg is imported only when used

        return PostgresStore(url, **limits)
    if url.startswith("sqlite:///"):
        path = url[len("sqlite://"):]
    elif url.startswith("sqlite:"):
        path = url[len("sqlite:"):]
    elif "://" in url or url.startswith("postgres"):
        raise ValueError(f"unsupported store URL {url!r} (supported: sqlite:PATH, postgresql://...)")
    else:
        path = url
    if not path:
        raise ValueError(f"store URL {url!r} names no file")
    return SqliteStore(path, **limits)
