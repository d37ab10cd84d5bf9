"""The command line's parser and ``main``, which runs the command (``receiver.commands``) it names.

``receiver serve | consume | dispatch | migrate | emulate | submit | replay | reconcile | abort``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import structlog

from receiver.commands import (
    abort_task,
    emulate,
    migrate,
    reconcile_once,
    replay,
    run_service,
    run_workers,
    submit_task,
    worker_of,
)
from receiver.config import load_settings
from receiver.errors import ReceiverError
from receiver.logs import configure_logging
from receiver.ports import DeliveryState

DEFAULT_CONFIG = Path("config/receiver.toml")


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


def _label(raw: str) -> tuple[str, str]:
    key, sep, value = raw.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. room=42); got {raw!r}")
    return key.strip(), value


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
        "--state", choices=tuple(DeliveryState), default=DeliveryState.DEAD, help="default: dead"
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
        worker = worker_of(args, os.environ)
        if worker is None and workers > 1:
            return run_workers(settings, config, workers)  # logs "listening" once the sockets are bound
        if args.command in ("serve", "consume", "dispatch"):
            run_service(settings, args.command, worker)  # logs "listening" once each listener is up
        elif args.command == "migrate":
            asyncio.run(migrate(settings))
        elif args.command == "replay":
            return asyncio.run(replay(settings, args))
        elif args.command == "reconcile":
            return asyncio.run(reconcile_once(settings, args))
        elif args.command == "abort":
            return asyncio.run(abort_task(settings, args))
        elif args.command == "emulate":
            log.info("emulating MPS", host=settings.emulator.host, port=settings.emulator.port)
            emulate(settings)
        elif args.command == "submit":
            if not args.json and not args.url:
                print("receiver submit: --url (or --json) is required", file=sys.stderr)
                return 2
            return submit_task(settings, args)
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
