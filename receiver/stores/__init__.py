"""Store adapters, chosen by the store URL: ``sqlite:///path`` (the default) or ``postgresql://...``."""

from __future__ import annotations

from pathlib import Path

from receiver.errors import ConfigError
from receiver.ports import Store
from receiver.settings import StoreSettings
from receiver.stores.sqlite import SqliteStore

__all__ = ["SqliteStore", "open_store"]


def sqlite_path(url: str) -> Path:
    """``sqlite:///var/receiver.db`` is relative to the working directory, ``sqlite:////abs`` absolute."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ConfigError(f"store.url: expected sqlite:///<path>, got {url!r}")
    return Path(url[len(prefix) :])


async def open_store(settings: StoreSettings) -> Store:
    if settings.url.startswith("sqlite:"):
        return await SqliteStore.open(
            sqlite_path(settings.url),
            synchronous=settings.sqlite_synchronous,
            busy_timeout_ms=settings.busy_timeout_ms,
        )
    if settings.postgres:
        from receiver.stores.postgres import PostgresStore

        return await PostgresStore.open(settings.url, max_size=settings.pool_size)
    scheme = settings.url.split(":", 1)[0]
    raise ConfigError(f"store.url: expected sqlite:///<path> or postgresql://..., got {scheme}:...")
