"""The event document: its payload decoded for whoever reads it, spliced for whoever only encodes it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson

from receiver.dispatch import Dispatcher
from receiver.documents import event_document, splices
from receiver.ports import Delivery, EventRecord
from receiver.retries import SinkPolicy
from receiver.stores.sqlite import SqliteStore
from tests.payloads import event_of, example

BODY = b'{"NotificationType": "AiReviewResult", "TaskId": "T", "Text": "\\u4e2d\\u0000", "A": [{"a": null}]}'


def record(body: bytes = BODY) -> EventRecord:
    return EventRecord(
        seq=7, event_id="e7", task_id="T", task_ref="ours", matched_by=None, notification_type="AiReview",
        session_id="", session_context="", channel="http", received_at=1.5, verdict="valid", late=False,
        duplicates=0, err_code=None, err_message=None, findings=[{"kind": "Porn"}], body=body,
    )  # fmt: skip


def test_raw_is_the_stored_body_decoded() -> None:
    assert record().raw == orjson.loads(BODY)


def test_a_spliced_document_encodes_to_the_same_json_without_decoding_the_payload() -> None:
    spliced = event_document(record(), spliced=True)
    assert isinstance(spliced["payload"], orjson.Fragment)
    assert orjson.loads(orjson.dumps(spliced)) == orjson.loads(orjson.dumps(event_document(record())))


def test_only_a_sink_that_says_so_is_given_the_payload_spliced() -> None:
    class Reader:
        name = "reader"

    class Encoder:
        name = "encoder"
        splices_payload = True

    class Truthy:
        name = "truthy"
        splices_payload = "yes"  # only True itself counts

    assert [splices(s) for s in (Reader(), Encoder(), Truthy())] == [False, True, False]


class _Catch:
    def __init__(self, name: str, splice: bool) -> None:
        self.name = name
        self.splices_payload = splice
        self.got: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    async def deliver(self, delivery: Delivery, document: dict[str, Any]) -> None:
        self.got.set_result(document)

    async def aclose(self) -> None:
        pass


async def test_the_dispatcher_splices_for_the_sinks_that_say_so(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "r.db")
    try:
        event = event_of(example("03-AiReviewResult-Image.constructed.json"))
        await store.record_events([event], lambda e, t: ("spliced", "decoded"))
        caught = [_Catch("spliced", True), _Catch("decoded", False)]
        dispatcher = Dispatcher(store, [(sink, SinkPolicy()) for sink in caught], poll_interval=0.01)
        await dispatcher.start()
        spliced, decoded = [await asyncio.wait_for(sink.got, 10) for sink in caught]
        await dispatcher.stop()
    finally:
        await store.aclose()
    assert isinstance(spliced["payload"], orjson.Fragment)
    assert decoded["payload"] == orjson.loads(event.body)
    assert orjson.loads(orjson.dumps(spliced)) == orjson.loads(orjson.dumps(decoded))
