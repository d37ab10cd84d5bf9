"""The command line: ``python -m receiver serve | migrate``."""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import structlog
from aiohttp import web
from aiohttp.log import access_logger

from receiver.app import create_app
from receiver.errors import ReceiverError
from receiver.logs import configure_logging
from receiver.ports import DeliveryQuery, DeliveryState
from receiver.settings import Settings, load_settings
from receiver.stores import open_store

DEFAULT_CONFIG = Path("config/receiver.toml")


async def _settle_gc(app: web.Application) -> None:
    """Once started: move what start-up built out of the collector's way, and collect less often.

    Every notification allocates a few hundred short-lived objects (pydantic models, findings);
    with the default thresholds the full collections that follow walk every long-lived object
    (modules, schemas, the app) and show up as p99 stalls. Measured in bench/: -2/3 of p99.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def _serve(settings: Settings, role: Literal["serve", "consume", "dispatch"]) -> None:
    try:
        import uvloop
    except ImportError:  # optional: the standard loop works, only slower
        pass
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    app = create_app(settings, role=role)
    app.on_startup.append(_settle_gc)
    web.run_app(
        app,
        host=settings.http.host,
        port=settings.http.port,
        access_log=access_logger if settings.http.access_log else None,
        shutdown_timeout=settings.http.shutdown_timeout,
        print=None,
        handler_cancellation=False,
    )


async def _replay(settings: Settings, args: argparse.Namespace) -> int:
    """Redrive deliveries from the command line, with a dry-run count and a progress line."""
    query = DeliveryQuery(
        sink=args.sink,
        state=args.state,
        task_id=args.task,
        notification_type=args.type,
        since=args.since,
        until=args.until,
    )
    store = await open_store(settings.store)
    try:
        matching = await store.redrive(query, now=time.time(), dry_run=True)
        what = ", ".join(f"{k}={v}" for k, v in vars(args).items() if k in _REPLAY_FILTERS and v is not None)
        print(f"{matching} deliveries match ({what or 'everything'})", file=sys.stderr)
        if args.dry_run or matching == 0:
            return 0

        def progress(done: int) -> None:
            width = 30
            filled = width * min(done, matching) // max(matching, 1)
            bar = "#" * filled + "." * (width - filled)
            print(f"\r[{bar}] {done}/{matching}", end="", file=sys.stderr, flush=True)

        n = await store.redrive(query, now=time.time(), progress=progress)
        print(f"\n{n} deliveries pending again; a running dispatcher picks them up", file=sys.stderr)
        return 0
    finally:
        await store.aclose()


_REPLAY_FILTERS = ("sink", "state", "task", "type", "since", "until")


def _when(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


async def _migrate(settings: Settings) -> None:
    store = await open_store(settings.store)  # opening migrates
    await store.aclose()
    structlog.get_logger("receiver").info("migrated", url=settings.store.url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="receiver", description=__doc__)
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"TOML settings file (default: {DEFAULT_CONFIG} if it exists); RECEIVER_* variables override it",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "serve", help="run the webhook and the management API (and the consumer if amqp.url is set)"
    )
    commands.add_parser("consume", help="run the AMQP consumer alone, with the health probes")
    commands.add_parser("dispatch", help="run the outbox dispatcher alone, with the health probes")
    commands.add_parser("migrate", help="create or upgrade the store's schema, then exit")
    replay = commands.add_parser(
        "replay", help="make deliveries pending again (redrive dead ones, replay delivered)"
    )
    replay.add_argument("--sink", help="only this sink")
    replay.add_argument(
        "--state", choices=DeliveryState.ALL, default=DeliveryState.DEAD, help="default: dead"
    )
    replay.add_argument("--task", help="only this MPS TaskId")
    replay.add_argument("--type", help="only this NotificationType")
    replay.add_argument("--since", type=_when, help="events received at or after (unix seconds or ISO 8601)")
    replay.add_argument("--until", type=_when, help="events received before (unix seconds or ISO 8601)")
    replay.add_argument("--dry-run", action="store_true", help="count, change nothing")
    args = parser.parse_args(argv)

    config = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    try:
        settings = load_settings(config)
    except (ReceiverError, ValueError) as exc:
        print(f"receiver: bad settings: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log.format, settings.log.level)
    log = structlog.get_logger("receiver")
    log.info("starting", command=args.command, config=str(config) if config else None)
    try:
        if args.command in ("serve", "consume", "dispatch"):
            log.info("listening", host=settings.http.host, port=settings.http.port)
            _serve(settings, args.command)
        elif args.command == "migrate":
            asyncio.run(_migrate(settings))
        elif args.command == "replay":
            return asyncio.run(_replay(settings, args))
    except ReceiverError as exc:
        log.error("cannot start", error=str(exc))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
