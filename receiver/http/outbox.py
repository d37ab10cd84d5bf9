"""Management API of the outbox: list deliveries, redrive them, see and re-enable sinks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from aiohttp import web
from aiohttp.helpers import ChainMapProxy

from receiver.dispatch import Dispatcher
from receiver.documents import iso
from receiver.http.keys import CLOCK, DISPATCHER, SINK_NAMES, STORE
from receiver.http.params import (
    BadParameterError,
    choice_param,
    cursor_param,
    digits,
    json_body,
    limit_param,
    time_param,
)
from receiver.http.responses import error_response, json_response
from receiver.ports import Attempt, DeliveryQuery, DeliveryRow, DeliveryState

log = structlog.get_logger("receiver.outbox_api")


def _dispatcher(request: web.Request) -> Dispatcher | None:
    """This process's dispatcher, if it runs here (it runs in one process per store)."""
    return _here(request.config_dict)


def _here(config: ChainMapProxy) -> Dispatcher | None:
    leased = config.get(DISPATCHER)
    return leased.current if leased is not None else None


def delivery_query(params: Mapping[str, Any], *, after: int = 0, limit: int = 100) -> DeliveryQuery:
    state = params.get("state")
    if state is not None:
        choice_param(state, "state", tuple(DeliveryState))
    for name in ("sink", "task_id", "type"):
        if params.get(name) is not None and not isinstance(params[name], str):
            raise BadParameterError(name, "a string")
    return DeliveryQuery(
        sink=params.get("sink"),
        state=DeliveryState(state) if state is not None else None,
        task_id=params.get("task_id"),
        notification_type=params.get("type"),
        since=time_param(str(params["since"]), "since") if params.get("since") is not None else None,
        until=time_param(str(params["until"]), "until") if params.get("until") is not None else None,
        after=after,
        limit=limit,
    )


def delivery_document(d: DeliveryRow) -> dict[str, Any]:
    return {
        "id": d.id,
        "sink": d.sink,
        "state": d.state,
        "attempts": d.attempts,
        "next_attempt_at": iso(d.next_attempt_at) if d.state == DeliveryState.PENDING else None,
        "last_error": d.last_error,
        "created_at": iso(d.created_at),
        "delivered_at": iso(d.delivered_at),
        "event_id": d.event_id,
        "task_id": d.task_id,
        "notification_type": d.notification_type,
    }


async def list_deliveries(request: web.Request) -> web.Response:
    query = delivery_query(request.query, after=cursor_param(request), limit=limit_param(request))
    page = await request.config_dict[STORE].list_deliveries(query)
    return json_response({"items": [delivery_document(d) for d in page.items], "next": page.next})


async def redrive(request: web.Request) -> web.Response:
    """``POST /v1/deliveries/redrive``: make matching deliveries (default: the dead) pending again."""
    body = await json_body(request, empty={})
    if not isinstance(body, dict):
        raise BadParameterError("body", "a JSON object")
    unknown = set(body) - {"sink", "state", "task_id", "type", "since", "until", "dry_run"}
    if unknown:
        raise BadParameterError(
            sorted(unknown)[0], "one of sink, state, task_id, type, since, until, dry_run"
        )
    query = delivery_query({"state": DeliveryState.DEAD, **body})
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise BadParameterError("dry_run", "true or false")
    n = await redrive_deliveries(request.config_dict, query, dry_run=dry_run)
    log.info("redrive", matched=n, dry_run=dry_run, **{k: v for k, v in body.items() if k != "dry_run"})
    return json_response({"matched" if dry_run else "redriven": n})


async def redrive_deliveries(config: ChainMapProxy, query: DeliveryQuery, *, dry_run: bool = False) -> int:
    """Make the matching deliveries pending again (or count them), and wake this process's dispatcher."""
    n = await config[STORE].redrive(query, now=config[CLOCK](), dry_run=dry_run)
    if not dry_run and (dispatcher := _here(config)) is not None:
        dispatcher.wake()
    return n


async def switch_on(config: ChainMapProxy, name: str) -> None:
    """Switch a sink back on in the store, which every dispatcher follows (this process's at once)."""
    dispatcher = _here(config)
    if dispatcher is not None:
        await dispatcher.enable(name)
    else:
        await config[STORE].set_sink_disabled(name, None, now=config[CLOCK]())
    log.info("sink enabled", sink=name)


async def list_sinks(request: web.Request) -> web.Response:
    """Per sink: backlog, delivered, dead, the age of the oldest undelivered event, breaker state."""
    now = request.config_dict[CLOCK]()
    dispatcher = _dispatcher(request)
    live = dispatcher.status() if dispatcher is not None else {}
    limits = dispatcher.rate_limits() if dispatcher is not None else {}
    stats = {s.sink: s for s in await request.config_dict[STORE].sink_stats()}
    items = []
    for name in sorted(set(stats) | set(live)):
        s = stats.get(name)
        items.append(
            {
                "sink": name,
                "backlog": s.pending if s else 0,
                "delivered": s.delivered if s else 0,
                "dead": s.dead if s else 0,
                "oldest_undelivered_age_seconds": round(now - s.oldest_pending_at, 3)
                if s and s.oldest_pending_at is not None
                else None,
                "disabled": s.disabled if s else None,
                "rate_limit": limits.get(name),  # per_second, burst, tokens now, held_back
                "since_start": live.get(name, {}),
            }
        )
    return json_response({"items": items})


async def enable_sink(request: web.Request) -> web.Response:
    """Switch a sink back on in the store, which every dispatcher follows (this process's at once)."""
    name = request.match_info["name"]
    configured = request.config_dict[SINK_NAMES]
    if name not in configured:
        known = ", ".join(sorted(configured)) or "none configured"
        return error_response(404, "unknown_sink", f"no sink named {name!r} (sinks: {known})", field="name")
    await switch_on(request.config_dict, name)
    return json_response({"sink": name, "enabled": True})


def attempt_document(a: Attempt) -> dict[str, Any]:
    return {
        "attempt": a.attempt,
        "at": iso(a.at),
        "outcome": a.outcome,
        "error": a.error,
        "status": a.status,
        "latency_ms": a.latency_ms,
        "snippet": a.snippet,
    }


def delivery_id_param(request: web.Request) -> int:
    return digits(request.match_info["id"], "id", "a delivery id (an integer)")


async def find_delivery(config: ChainMapProxy, delivery_id: int) -> DeliveryRow | None:
    page = await config[STORE].list_deliveries(DeliveryQuery(id=delivery_id, limit=1))
    return page.items[0] if page.items else None


async def list_attempts(request: web.Request) -> web.Response:
    """``GET /v1/deliveries/{id}/attempts``: the delivery and each of its attempts, oldest first."""
    delivery_id = delivery_id_param(request)
    delivery = await find_delivery(request.config_dict, delivery_id)
    if delivery is None:
        return error_response(404, "not_found", f"no delivery {delivery_id}", field="id")
    attempts = await request.config_dict[STORE].list_attempts(delivery_id)
    return json_response(
        {"delivery": delivery_document(delivery), "items": [attempt_document(a) for a in attempts]}
    )


def add_routes(api: web.Application) -> None:
    api.router.add_get("/deliveries", list_deliveries)
    api.router.add_get("/deliveries/{id}/attempts", list_attempts)
    api.router.add_post("/deliveries/redrive", redrive)
    api.router.add_get("/sinks", list_sinks)
    api.router.add_post("/sinks/{name}/enable", enable_sink)
