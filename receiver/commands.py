"""The commands of the command line, run once ``receiver.__main__`` has parsed them and read the settings."""

from __future__ import annotations

import argparse
import asyncio
import gc
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import orjson
import structlog
from aiohttp import web
from aiohttp.log import access_logger

from receiver import logs
from receiver.app import create_app
from receiver.bell import Bell
from receiver.errors import ConfigError
from receiver.listeners import listen_addresses, listeners_for, serve
from receiver.metrics import Metrics
from receiver.ports import DeliveryQuery
from receiver.redact import redact_url
from receiver.settings import Settings
from receiver.stores import open_store
from receiver.workers import WorkerSpec, supervise, worker_command


async def _settle_gc(app: web.Application) -> None:
    """Once started: move what start-up built out of the collector's way, and collect less often.

    Every notification allocates a few hundred short-lived objects (pydantic models, findings);
    with the default thresholds the full collections that follow walk every long-lived object
    (modules, schemas, the app) and show up as p99 stalls. Measured in bench/: -2/3 of p99.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


@dataclass(frozen=True)
class Worker:
    """A worker the parent of ``serve --workers`` started: what it was told, and where its metrics go."""

    spec: WorkerSpec
    metrics_dir: Path


def run_service(
    settings: Settings, role: Literal["serve", "consume", "dispatch"], worker: Worker | None = None
) -> None:
    try:
        import uvloop
    except ImportError:  # optional: the standard loop works, only slower
        pass
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    metrics = Metrics.shared(worker.metrics_dir) if worker else None
    bell = Bell(*worker.spec.bell) if worker else None
    # Refuses impossible settings before anything listens.
    app = create_app(settings, role=role, metrics=metrics, bell=bell)
    app.on_startup.append(_settle_gc)
    listeners = listeners_for(settings, app, role)
    if worker is not None:
        logs.bind(worker=worker.spec.index)  # on each of its lines
        for listener in listeners:
            inherited = worker.spec.sockets.get(listener.name, [])
            listener.sockets = [socket.socket(fileno=fd) for fd in inherited]
            if not listener.sockets:
                raise ConfigError(f"worker: no socket inherited for the {listener.name} listener")
    asyncio.run(
        serve(
            listeners,
            access_log=access_logger if settings.http.access_log else None,
            shutdown_timeout=settings.http.shutdown_timeout,
            parent_fd=worker.spec.parent_fd if worker else None,
        )
    )


def run_workers(settings: Settings, config: Path | None, count: int) -> int:
    """``serve --workers N`` (N > 1): this process binds the sockets and minds the workers."""
    create_app(settings, role="serve")  # refuses impossible settings before anything listens
    # A worker drains its requests, then its dispatcher's deliveries and its consumer's messages.
    stop_timeout = 2 * settings.http.shutdown_timeout + settings.amqp.shutdown_timeout + 5
    return supervise(
        worker_command(config), count, listen_addresses(settings, "serve"), stop_timeout=stop_timeout
    )


async def replay(settings: Settings, args: argparse.Namespace) -> int:
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
            _bar(done, matching)

        n = await store.redrive(query, now=time.time(), progress=progress)
        print(f"\n{n} deliveries pending again; a running dispatcher picks them up", file=sys.stderr)
        return 0
    finally:
        await store.aclose()


_REPLAY_FILTERS = ("sink", "state", "task", "type", "since", "until")


def _bar(done: int, total: int) -> None:
    width = 30
    filled = width * min(done, total) // max(total, 1)
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end="", file=sys.stderr, flush=True)


async def reconcile_once(settings: Settings, args: argparse.Namespace) -> int:
    """One reconcile pass by hand (under the lease the service's passes take), with a progress bar."""
    from dataclasses import asdict

    from receiver.build import build_reconciler
    from receiver.routing import router

    store = await open_store(settings.store)
    try:
        route = router([(s.name, s.filter) for s in settings.sinks]) if settings.sinks else None
        reconciler = build_reconciler(settings, store, route=route)
        if reconciler is None:
            print("receiver reconcile: MPS cannot be asked: set the mps credentials", file=sys.stderr)
            return 2
        report = await reconciler.once(
            dry_run=args.dry_run, discover=True if args.discover else None, progress=_bar
        )
        if report.candidates:
            print(file=sys.stderr)
        if report.lease == "busy":
            held = await store.lease_holder("reconcile")
            who = f" by {held[0]} until {datetime.fromtimestamp(held[1], UTC).isoformat()}" if held else ""
            print(
                f"receiver reconcile: another pass is running (the lease is held{who}); try again",
                file=sys.stderr,
            )
            return 1
        verb = "would end" if args.dry_run else "ended"
        print(
            f"{report.asked} asked: {report.ended} {verb}, {report.live} live"
            f" ({report.revived} were stalled), {report.not_found} unknown to MPS, {report.errors} errors"
            + (f", {report.discovered} discovered" if report.discovered else "")
            + (f"; stopped: {report.stopped}" if report.stopped else ""),
            file=sys.stderr,
        )
        print(orjson.dumps(asdict(report)).decode())
        return 1 if report.stopped else 0
    finally:
        await store.aclose()


async def abort_task(settings: Settings, args: argparse.Namespace) -> int:
    """ManageTask Abort for one task, within the deployment's budget; prints the task."""
    from receiver.abort import abort
    from receiver.documents import task_document
    from receiver.errors import ConfigError, ConflictError
    from receiver.http.abort import mps_status
    from receiver.mps import MpsClient, MpsError, shared_budgets

    store = await open_store(settings.store)
    try:
        try:
            client = MpsClient(settings.mps, budgets=shared_budgets(store, settings.mps))
        except ConfigError as exc:
            print(f"receiver abort: {exc}", file=sys.stderr)
            return 2
        task = await store.get_task(args.task)
        if task is None:
            print(f"receiver abort: no task {args.task!r}", file=sys.stderr)
            return 1
        try:
            task, request_id = await abort(task, store, client, time.time)
        except ConflictError as exc:
            print(f"receiver abort: {exc}", file=sys.stderr)
            return 1
        except MpsError as exc:
            print(
                f"receiver abort: MPS refused ({exc.mps_code}; the API answers"
                f" {mps_status(exc.mps_code)}): {exc.message}"
                + (f" [RequestId {exc.request_id}]" if exc.request_id else ""),
                file=sys.stderr,
            )
            return 1
        doc = {**task_document(task, now=time.time()), "abort_request_id": request_id}
        print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
        return 0
    finally:
        await store.aclose()


def worker_of(args: argparse.Namespace, environ: Mapping[str, str]) -> Worker | None:
    """The worker the parent of ``serve --workers`` started (``--worker``, see ``workers.WorkerSpec``);
    None if this process is not one."""
    if args.command != "serve" or args.worker is None:
        return None
    spec = WorkerSpec.parse(args.worker)
    metrics_dir = environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not metrics_dir:
        raise ConfigError("--worker: PROMETHEUS_MULTIPROC_DIR is not set (the parent of --workers sets it)")
    return Worker(spec, Path(metrics_dir))


def emulate(settings: Settings) -> None:
    from receiver.emulator import create_emulator

    emulator = settings.emulator
    web.run_app(
        create_emulator(emulator), host=emulator.host, port=emulator.port, print=None, access_log=None
    )


def submit_task(settings: Settings, args: argparse.Namespace) -> int:
    """Ask a running receiver to submit a task (it records it, then calls ProcessLiveStream)."""
    import urllib.error
    import urllib.request

    body: dict[str, object]
    if args.json:
        body = orjson.loads(Path(args.json).read_bytes())
    else:
        if args.notify_url:
            notify: dict[str, object] = {"NotifyType": "URL", "NotifyUrl": args.notify_url}
        elif args.queue:
            notify = {
                "NotifyType": "TDMQ-CMQ",
                "CmqModel": "Queue",
                "QueueName": args.queue,
                "CmqRegion": args.region,
            }
        elif args.topic:
            notify = {
                "NotifyType": "TDMQ-CMQ",
                "CmqModel": "Topic",
                "TopicName": args.topic,
                "CmqRegion": args.region,
            }
        else:
            print("receiver submit: give --notify-url, --queue or --topic (or --json)", file=sys.stderr)
            return 2
        if args.notify_key:
            notify["NotifyKey"] = args.notify_key
        body = {"Url": args.url, "TaskNotifyConfig": notify}
        for flag, name in (
            ("review", "AiContentReviewTask"),
            ("recognition", "AiRecognitionTask"),
            ("analysis", "AiAnalysisTask"),
            ("quality", "AiQualityControlTask"),
            ("subtitles", "SmartSubtitlesTask"),
        ):
            if getattr(args, flag) is not None:
                body[name] = {"Definition": getattr(args, flag)}
        for flag, name in (("session_id", "SessionId"), ("session_context", "SessionContext")):
            if getattr(args, flag):
                body[name] = getattr(args, flag)
        body["Labels"] = dict(args.label)
    headers = {"Content-Type": "application/json"}
    if settings.api.token is not None:
        headers["Authorization"] = f"Bearer {settings.api.token.get_secret_value()}"
    host, port = settings.http.management_address
    server = args.server or f"http://{host}:{port}"
    req = urllib.request.Request(f"{server}/v1/tasks/submit", data=orjson.dumps(body), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            print(orjson.dumps(orjson.loads(resp.read()), option=orjson.OPT_INDENT_2).decode())
            return 0
    except urllib.error.HTTPError as exc:
        print(f"receiver submit: HTTP {exc.code}: {exc.read().decode(errors='replace')}", file=sys.stderr)
        return 1
    except urllib.error.URLError as exc:
        print(f"receiver submit: cannot reach {server}: {exc.reason}", file=sys.stderr)
        return 1


async def migrate(settings: Settings) -> None:
    store = await open_store(settings.store)  # opening migrates
    await store.aclose()
    structlog.get_logger("receiver").info("migrated", url=redact_url(settings.store.url))
