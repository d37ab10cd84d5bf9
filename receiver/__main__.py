"""The command line: ``receiver serve | consume | dispatch | migrate | emulate | submit | replay |
reconcile | abort``."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
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

from receiver.app import create_app, listen_addresses, listeners_for
from receiver.bell import Bell
from receiver.config import load_settings
from receiver.errors import ConfigError, ReceiverError
from receiver.listeners import serve
from receiver.logs import configure_logging
from receiver.metrics import Metrics
from receiver.ports import DeliveryQuery, DeliveryState
from receiver.redact import redact_url
from receiver.settings import Settings
from receiver.stores import open_store
from receiver.workers import WorkerSpec, supervise, worker_command

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


@dataclass(frozen=True)
class Worker:
    """A worker the parent of ``serve --workers`` started: what it was told, and where its metrics go."""

    spec: WorkerSpec
    metrics_dir: Path


def _serve(
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
        structlog.contextvars.bind_contextvars(worker=worker.spec.index)  # on each of its lines
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


def _supervise(settings: Settings, config: Path | None, count: int) -> int:
    """``serve --workers N`` (N > 1): this process binds the sockets and minds the workers."""
    create_app(settings, role="serve")  # refuses impossible settings before anything listens
    # A worker drains its requests, then its dispatcher's deliveries and its consumer's messages.
    stop_timeout = 2 * settings.http.shutdown_timeout + settings.amqp.shutdown_timeout + 5
    return supervise(
        worker_command(config), count, listen_addresses(settings, "serve"), stop_timeout=stop_timeout
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


async def _reconcile(settings: Settings, args: argparse.Namespace) -> int:
    """One reconcile pass by hand (under the lease the service's passes take), with a progress bar."""
    from dataclasses import asdict

    from receiver.app import build_reconciler
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


async def _abort(settings: Settings, args: argparse.Namespace) -> int:
    """ManageTask Abort for one task, within the deployment's budget; prints the task."""
    from receiver.abort import abort
    from receiver.abort_api import mps_status
    from receiver.documents import task_document
    from receiver.errors import ConfigError, ConflictError
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


# "1h" and "-1h" alike: a leading "-" would need --since=-1h, argparse takes it for an option.
_AGO = re.compile(r"-?(\d+(?:\.\d+)?)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
WHEN_FORMATS = "unix seconds, ISO 8601 (2026-01-31T12:00:00Z), now, or a time ago (30m, 1h, 7d)"


def _when(raw: str) -> float:
    """A point in time for --since/--until; argparse names the option in the error."""
    text = raw.strip()
    if text == "now":
        return time.time()
    if ago := _AGO.fullmatch(text):
        return time.time() - float(ago[1]) * _UNIT_SECONDS[ago[2]]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {WHEN_FORMATS}; got {raw!r}") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def _positive(raw: str) -> int:
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1; got {raw!r}")
    return n


def _worker(args: argparse.Namespace, environ: Mapping[str, str]) -> Worker | None:
    """The worker the parent of ``serve --workers`` started (``--worker``, see ``workers.WorkerSpec``);
    None if this process is not one."""
    if args.command != "serve" or args.worker is None:
        return None
    spec = WorkerSpec.parse(args.worker)
    metrics_dir = environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not metrics_dir:
        raise ConfigError("--worker: PROMETHEUS_MULTIPROC_DIR is not set (the parent of --workers sets it)")
    return Worker(spec, Path(metrics_dir))


def _label(raw: str) -> tuple[str, str]:
    key, sep, value = raw.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. room=42); got {raw!r}")
    return key.strip(), value


def _emulate(settings: Settings) -> None:
    from receiver.emulator import create_emulator

    emulator = settings.emulator
    web.run_app(
        create_emulator(emulator), host=emulator.host, port=emulator.port, print=None, access_log=None
    )


def _submit(settings: Settings, args: argparse.Namespace) -> int:
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


async def _migrate(settings: Settings) -> None:
    store = await open_store(settings.store)  # opening migrates
    await store.aclose()
    structlog.get_logger("receiver").info("migrated", url=redact_url(settings.store.url))


def _command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str, detail: str
) -> argparse.ArgumentParser:
    """A subcommand with its one-line summary (in ``receiver --help``) and a fuller description."""
    return commands.add_parser(
        name,
        help=summary,
        description=f"{summary[0].upper()}{summary[1:]}. {detail}",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="receiver",
        description="Receive Tencent Cloud MPS live-stream notifications (webhook and AMQP), store them"
        " once, deliver them to sinks.",
        epilog="Settings come from the TOML file, overridden by RECEIVER_<SECTION>__<KEY> environment"
        " variables (lists and tables as JSON). `receiver <command> --help` describes each command.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"TOML settings file (default: {DEFAULT_CONFIG} if it exists); RECEIVER_* variables override it",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve_command = _command(
        commands,
        "serve",
        "run the webhook and the management API (and the consumer if amqp.url is set)",
        "Listens on http.host:http.port; runs the outbox dispatcher too unless dispatch_in_serve = false"
        " (one process per store dispatches at a time, under a lease: the others stand by).",
    )
    serve_command.add_argument(
        "--workers",
        type=_positive,
        metavar="N",
        help="processes sharing the listening socket(s), which a parent binds once and restarts them"
        " on; one of them runs the dispatcher and the maintenance loop (default: http.workers)",
    )
    serve_command.add_argument(
        "--worker",
        metavar="SPEC",
        help="internal: how the parent of --workers starts each worker (its index, the parent's pipe"
        " and the inherited sockets)",
    )
    _command(
        commands,
        "consume",
        "run the AMQP consumer alone, with the health probes",
        "For worker replicas: needs amqp.url; serves /healthz, /readyz and /metrics only.",
    )
    _command(
        commands,
        "dispatch",
        "run the outbox dispatcher alone, with the health probes",
        "Delivers stored events to the sinks, with dispatch_in_serve = false in serve; one process per"
        " store dispatches at a time (a lease), so a second one stands by.",
    )
    _command(
        commands,
        "migrate",
        "create or upgrade the store's schema, then exit",
        "Every command that opens the store migrates it too; this one does only that.",
    )
    _command(
        commands,
        "emulate",
        "run the local MPS emulator (settings: [emulator])",
        "Answers ProcessLiveStream (TC3-signed) on emulator.host:emulator.port and plays a scenario of"
        " notifications to the task's NotifyUrl or queue.",
    )
    submit = _command(
        commands,
        "submit",
        "start a task through a running receiver (ProcessLiveStream)",
        "Posts to the receiver's /v1/tasks/submit, which records the task and calls MPS; prints the"
        " task record. Give --url and one of --notify-url, --queue, --topic, or the whole request"
        " with --json.",
    )
    submit.add_argument("--server", help="the receiver's base URL (default: from http.host and http.port)")
    submit.add_argument("--json", help="a file with the full request (ProcessLiveStream names, plus Labels)")
    submit.add_argument("--url", help="the live stream URL (rtmp://, srt://, https:// ...)")
    target = submit.add_mutually_exclusive_group()
    target.add_argument("--notify-url", help="NotifyType URL: where MPS POSTs notifications")
    target.add_argument("--queue", help="NotifyType TDMQ-CMQ, CmqModel Queue: the QueueName")
    target.add_argument("--topic", help="NotifyType TDMQ-CMQ, CmqModel Topic: the TopicName")
    submit.add_argument("--region", default="gz", help="CmqRegion (default gz)")
    submit.add_argument(
        "--notify-key", help="NotifyKey: MPS signs notifications with it (one of verify.notify_keys)"
    )
    for flag in ("review", "recognition", "analysis", "quality", "subtitles"):
        submit.add_argument(f"--{flag}", type=int, metavar="DEFINITION", help=f"the {flag} template id")
    submit.add_argument("--session-id", help="SessionId (dedup, <= 50 chars, 7 days)")
    submit.add_argument("--session-context", help="SessionContext (default: one receiver generates)")
    submit.add_argument(
        "--label",
        action="append",
        default=[],
        type=_label,
        metavar="KEY=VALUE",
        help="kept on the task record (repeat for several)",
    )
    replay = _command(
        commands,
        "replay",
        "make deliveries pending again (redrive dead ones, replay delivered)",
        "Filters combine; --dry-run counts what would change. A running dispatcher sends them.",
    )
    replay.add_argument("--sink", help="only this sink")
    replay.add_argument(
        "--state", choices=DeliveryState.ALL, default=DeliveryState.DEAD, help="default: dead"
    )
    replay.add_argument("--task", help="only this MPS TaskId")
    replay.add_argument("--type", help="only this NotificationType")
    replay.add_argument(
        "--since", type=_when, metavar="WHEN", help=f"events received at or after: {WHEN_FORMATS}"
    )
    replay.add_argument("--until", type=_when, metavar="WHEN", help=f"events received before: {WHEN_FORMATS}")
    replay.add_argument("--dry-run", action="store_true", help="count, change nothing")
    reconcile = _command(
        commands,
        "reconcile",
        "ask MPS once about silent, overdue and aborting tasks, and end those it says ended",
        "One pass of what the service does every reconcile.interval, under the same lease (if a pass is"
        " running elsewhere, says so and exits 1); a progress bar on stderr, the counts as JSON on stdout.",
    )
    reconcile.add_argument(
        "--dry-run", action="store_true", help="ask MPS, say what would change, change nothing"
    )
    reconcile.add_argument(
        "--discover",
        action="store_true",
        help="also list MPS's live tasks (DescribeTasks) and register those receiver never saw",
    )
    abort = _command(
        commands,
        "abort",
        "ask MPS to abort a task (ManageTask), which shows aborting until its end is known",
        "At most 20 requests/s for the whole deployment (leased from the store). Prints the task.",
    )
    abort.add_argument("task", help="the task: its MPS TaskId, or receiver's own id")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    config = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    try:
        settings = load_settings(config)
    except (ReceiverError, ValueError) as exc:
        print(f"receiver: bad settings: {exc}", file=sys.stderr)
        return 2
    # A one-shot command's output is its answer (stdout); its log goes to stderr.
    one_shot = args.command in ("submit", "replay", "migrate", "reconcile", "abort")
    configure_logging(settings.log.format, settings.log.level, sys.stderr if one_shot else None)
    log = structlog.get_logger("receiver")
    log.info("starting", command=args.command, config=str(config) if config else None)
    try:
        workers = (args.workers or settings.http.workers) if args.command == "serve" else 1
        worker = _worker(args, os.environ)
        if worker is None and workers > 1:
            return _supervise(settings, config, workers)  # logs "listening" once the sockets are bound
        if args.command in ("serve", "consume", "dispatch"):
            _serve(settings, args.command, worker)  # logs "listening" once each listener is up
        elif args.command == "migrate":
            asyncio.run(_migrate(settings))
        elif args.command == "replay":
            return asyncio.run(_replay(settings, args))
        elif args.command == "reconcile":
            return asyncio.run(_reconcile(settings, args))
        elif args.command == "abort":
            return asyncio.run(_abort(settings, args))
        elif args.command == "emulate":
            log.info("emulating MPS", host=settings.emulator.host, port=settings.emulator.port)
            _emulate(settings)
        elif args.command == "submit":
            if not args.json and not args.url:
                print("receiver submit: --url (or --json) is required", file=sys.stderr)
                return 2
            return _submit(settings, args)
    except ReceiverError as exc:
        log.error("cannot start", error=str(exc))
        return 2
    except OSError as exc:  # e.g. the port is taken
        if args.command not in ("serve", "consume", "dispatch"):
            raise
        log.error("cannot start", error=str(exc))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
