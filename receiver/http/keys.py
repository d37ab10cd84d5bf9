"""The typed keys the composition root sets on the application and the HTTP handlers read."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from receiver.consumer import AmqpConsumer
from receiver.dispatch import Dispatcher
from receiver.ingest import Ingestor
from receiver.leases import LeasedJob
from receiver.metrics import Metrics
from receiver.mps import MpsClient
from receiver.notices import Notices
from receiver.ports import Router, Sink, Store
from receiver.tracing import Tracing

STORE = web.AppKey("store", Store)
INGESTOR = web.AppKey("ingestor", Ingestor)  # not in the dispatch role, which ingests nothing
CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("clock")
CONSUMER = web.AppKey("consumer", AmqpConsumer)  # set when the AMQP consumer runs here
# The dispatcher runs in one process per store: ``.current`` is None in the others.
DISPATCHER: web.AppKey[LeasedJob[Dispatcher]] = web.AppKey("dispatcher")
METRICS = web.AppKey("metrics", Metrics)
NOTICES = web.AppKey("notices", Notices)
TRACING = web.AppKey("tracing", Tracing)  # set when tracing is on
ROUTER: web.AppKey[Router] = web.AppKey("router")  # set when sinks are configured
SINK_NAMES: web.AppKey[frozenset[str]] = web.AppKey("sink_names")  # the configured sinks
# The sinks themselves, by name, where the dispatcher may run (built once; closed by who built them).
SINKS: web.AppKey[dict[str, Sink]] = web.AppKey("sinks")
TASK_DEADLINE = web.AppKey("task_deadline", float)  # seconds; 0 = tasks are never overdue
MAX_BODY = web.AppKey("max_body", int)
BODY_TIMEOUT = web.AppKey("body_timeout", float)
# The MPS client, or None with the reason it cannot be built (no credentials).
MPS_CLIENT: web.AppKey[MpsClient | None] = web.AppKey("mps_client")
MPS_PROBLEM = web.AppKey("mps_problem", str)
# The master key that signs new tasks (the first of verify.master_keys), or None.
MASTER_KEY: web.AppKey[str | None] = web.AppKey("master_key")
NOTIFY_KEYS: web.AppKey[frozenset[str]] = web.AppKey("notify_keys")  # the static ones
