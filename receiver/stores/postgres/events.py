"""The ``EventLog`` port on PostgreSQL: events, their tasks and outbox rows in one commit; the quarantine."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final

import asyncpg

from receiver import tasks
from receiver.errors import StoreUnavailableError
from receiver.events import Event
from receiver.group_commit import Rider
from receiver.ports import Quarantined, Recorded, Router, Settlement
from receiver.stores import reads, rows
from receiver.stores.postgres.connection import UPDATE_TASKS, PostgresConnection, pg, task_row
from receiver.stores.postgres.outbox import settle
from receiver.stores.rows import encode_findings
from receiver.stores.task_rows import TASK_COLUMNS, task_from_row
from receiver.tasks import MatchedBy, outbox_key

# A batch's new events, in the batch's order (their seqs follow it), in one statement.
_INSERT_EVENTS = (
    "INSERT INTO events (event_id, task_id, task_ref, matched_by, notification_type, session_id, session_context,"
    " channel, received_at, verdict, late, err_code, err_message, findings, raw, sign_key, traceparent,"
    " foreign_task_id) SELECT event_id, task_id, task_ref, matched_by, notification_type, session_id,"
    " session_context, channel, received_at, verdict, late, err_code, err_message, findings, raw, sign_key,"
    " traceparent, foreign_task_id FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],"
    " $6::text[], $7::text[], $8::text[], $9::float8[], $10::text[], $11::bool[], $12::bigint[], $13::text[],"
    " $14::text[], $15::text[], $16::text[], $17::text[], $18::int[]) WITH ORDINALITY AS b(event_id, task_id,"
    " task_ref, matched_by, notification_type, session_id, session_context, channel, received_at, verdict,"
    " late, err_code, err_message, findings, raw, sign_key, traceparent, foreign_task_id, n) ORDER BY n"
    " ON CONFLICT (event_id) DO NOTHING RETURNING event_id, seq"
)


_INSERT_DELIVERIES = (
    "INSERT INTO deliveries (sink, event_seq, task_key, state, next_attempt_at, created_at, updated_at)"
    " SELECT sink, seq, key, 'pending', at, at, at FROM unnest($1::text[], $2::bigint[], $3::text[],"
    " $4::float8[]) WITH ORDINALITY AS b(sink, seq, key, at, n) ORDER BY n"
)


_COUNT_REPEATS = (
    "UPDATE events SET duplicates = events.duplicates + r.n, last_duplicate_at = r.at FROM (SELECT event_id,"
    " count(*) AS n, max(at) AS at FROM unnest($1::text[], $2::float8[]) AS b(event_id, at) GROUP BY event_id) r"
    " WHERE events.event_id = r.event_id"
)


_INSERT_SEARCH: Final = (
    "INSERT INTO event_search (seq, notification_type, received_at, kinds, labels, suggestions,"
    " confidence, text) SELECT * FROM unnest($1::bigint[], $2::text[], $3::float8[], $4::text[],"
    " $5::text[], $6::text[], $7::float8[], $8::text[])"
)


def _shifted(sql: str, by: int) -> str:
    """``sql`` with each ``$n`` placeholder renumbered ``$(n + by)``."""
    return re.sub(r"\$(\d+)", lambda m: f"${int(m.group(1)) + by}", sql)


# Everything a batch writes after its events (which give the seqs), in one round trip: data-modifying
# CTEs all run, referenced or not, each on a table of its own. Empty arrays write nothing.
_AFTER_EVENTS: Final = (
    f"WITH deliveries_added AS ({_INSERT_DELIVERIES}), searched AS ({_shifted(_INSERT_SEARCH, 4)}),"
    f" repeated AS ({_shifted(_COUNT_REPEATS, 12)}) {_shifted(UPDATE_TASKS, 14)}"
)
_AFTER_EVENTS_COLUMNS: Final = (4, 8, 2, 21)  # deliveries, search rows, repeats, tasks


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[Sequence[Any]]:
    """Rows as one sequence a column (``width`` empty ones when there are no rows)."""
    return list(zip(*rows, strict=True)) if rows else [()] * width


def _event_values(step: tasks.Step) -> tuple[Any, ...]:
    e = step.event
    return (
        e.event_id, e.task_id, step.task.id if step.task else None,
        step.matched_by.value if step.matched_by else None, e.notification_type, e.session_id,
        e.session_context, e.channel.value, e.received_at, e.verdict.value, step.late, e.err_code,
        e.err_message, encode_findings(e.findings).decode(), e.body.decode(), e.sign_key, e.traceparent,
        rows.foreign_task_id(step),
    )  # fmt: skip


class PostgresEventLog(PostgresConnection):
    """Events in, with what they change, in one transaction each batch."""

    async def record_events(self, events: Sequence[Event], route: Router | None = None) -> list[Recorded]:
        """Load what the plan needs in a few queries, plan the batch in the core, and write the plan
        with one statement per kind of row (events, deliveries, repeats, tasks)."""

        riders = self._riders
        taken: list[Rider[Settlement]] = []

        async def body(con: asyncpg.Connection) -> list[Recorded]:
            taken.extend(riders.take())
            if taken:
                await settle(con, riders.items(taken))
            contexts = sorted({e.session_context for e in events if e.session_context})
            task_ids = sorted({e.task_id for e in events})
            # One writer at a time per TaskId (registered or not), taken in one order: events of a
            # task then get their seq and outbox ids in commit order, which is what keeps a task's
            # deliveries in the order received when several replicas ingest it. Holding them, we
            # also know which of the batch's event ids are stored: an event id names its TaskId.
            # (The locks are a statement of their own: a statement's snapshot is taken before it
            # waits, so one that locked and read at once would miss what the last holder committed.)
            await con.execute(
                "SELECT count(pg_advisory_xact_lock(hashtext(t))) FROM (SELECT t FROM unnest($1::text[]) AS t ORDER BY t) AS keys",
                task_ids,
            )  # fmt: skip
            rows = await con.fetch(
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE session_context = ANY($1::text[])"
                " OR task_id = ANY($2::text[]) ORDER BY id FOR UPDATE",
                contexts,
                task_ids,
            )
            known = {r[0]: task_from_row(r) for r in rows}
            stored = {
                r[0]: tasks.StoredEvent(r[1], r[2], MatchedBy(r[3]) if r[3] else None, r[4])
                for r in await con.fetch(
                    "SELECT event_id, seq, task_ref, matched_by, late FROM events WHERE event_id = ANY($1::text[])",
                    list({e.event_id for e in events}),
                )
            }
            holders = {s.task_ref for s in stored.values() if s.task_ref and s.task_ref not in known}
            if holders:
                for r in await con.fetch(
                    f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ANY($1::text[])", list(holders)
                ):
                    known[r[0]] = task_from_row(r)
            plan = tasks.plan(events, tasks.Known(known, stored), route)
            seqs = {event_id: s.seq for event_id, s in stored.items()}
            new = plan.new
            if new:
                columns = list(zip(*(_event_values(step) for step in new), strict=True))
                inserted = await con.fetch(_INSERT_EVENTS, *columns)
                seqs.update((r[0], r[1]) for r in inserted)
                if len(inserted) != len(new):  # not reached: the locks above keep other writers out
                    raise StoreUnavailableError("postgres: an event of the batch was stored meanwhile")
            deliveries = [
                (sink, seqs[step.event.event_id], outbox_key(step.event), step.event.received_at)
                for step in new
                for sink in step.sinks
            ]
            searched = [
                row
                for step in new
                if (
                    row := reads.search_row(
                        seqs[step.event.event_id],
                        step.event.notification_type,
                        step.event.received_at,
                        step.event.findings,
                    )
                )
                is not None
            ]
            repeats = [(s.event.event_id, s.event.received_at) for s in plan.steps if s.duplicate]
            changed = [task_row(t) for t in plan.tasks.values()]
            parts: tuple[Sequence[Sequence[Any]], ...] = (deliveries, searched, repeats, changed)
            if any(parts):
                arguments = [
                    column
                    for part, width in zip(parts, _AFTER_EVENTS_COLUMNS, strict=True)
                    for column in _columns(part, width)
                ]
                await con.execute(_AFTER_EVENTS, *arguments)
            return plan.recorded(seqs)

        with riders.carrying():
            try:
                result = await self._run(body)
            except BaseException:
                riders.undone(taken)
                raise
        riders.done(taken)
        return result

    async def quarantine(self, entry: Quarantined) -> None:
        await self._run(lambda con: con.execute(pg(rows.QUARANTINE_INSERT), *rows.quarantine_values(entry)))
