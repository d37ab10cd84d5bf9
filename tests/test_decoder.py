"""Reading the bytes: the head before the rest, bounded nesting and sizes, exact scalar types, the
Sign cut out of what is kept, and msgspec's error messages turned into member and expectation."""

from __future__ import annotations

import copy
import difflib
import re
from typing import Any

import msgspec
import orjson
import pytest

from receiver import decoder, wire
from receiver.errors import InvalidNotificationError
from tests.payloads import NOTIFICATION_FILES, REVIEW, body, example, example_bytes

QC = example("07-AiQualityControlResult.constructed.json")


def read(raw: bytes) -> wire.Notification:
    data = decoder.unwrap(raw)
    decoder.read_head(data)
    return decoder.read_notification(data)


def refused(raw: bytes) -> InvalidNotificationError:
    with pytest.raises(InvalidNotificationError) as caught:
        read(raw)
    return caught.value


def test_msgspec_is_the_pinned_version_whose_messages_are_parsed() -> None:
    assert msgspec.__version__ == "0.23.0"
    for message, expected in [
        ("Expected `int | null`, got `str` - at `$.A.B[0].C`", ("A.B[0].C", "an integer", "a string")),
        ("Object missing required field `TaskId`", ("TaskId", "a value (the member is required)", None)),
        (
            "Object missing required field `X` - at `$.A[1]`",
            ("A[1].X", "a value (the member is required)", None),
        ),
        ("Expected `array` of length <= 1000 - at `$.X`", ("X", "an array of at most 1000 items", None)),
        (
            "Expected `str` of length <= 50 - at `$.SessionId`",
            ("SessionId", "a string of at most 50 characters", None),
        ),
        ("Expected `int` >= 0 - at `$.R`", ("R", "an integer >= 0", None)),
    ]:
        assert decoder.explain(message) == expected
    # The messages really have that form (a new msgspec that changes them fails here first).
    with pytest.raises(msgspec.ValidationError, match=r"^Expected `int \| null`, got `str` - at `\$\.N`$"):
        msgspec.json.decode(
            b'{"N": "x"}',
            type=type("S", (msgspec.Struct,), {"__annotations__": {"N": "int | None"}, "N": None}),
        )


@pytest.mark.parametrize("name", NOTIFICATION_FILES)
def test_the_head_is_read_alone_and_agrees_with_the_whole(name: str) -> None:
    data = decoder.unwrap(example_bytes(name))
    head = decoder.read_head(data)
    full = decoder.read_notification(data)
    assert (head.notification_type, head.task_id, head.timestamp, head.sign) == (
        full.notification_type,
        full.task_id,
        full.timestamp,
        full.sign,
    )


def test_nesting_deeper_than_64_is_refused_before_anything_is_decoded() -> None:
    ok = b'{"NotificationType": "X", "TaskId": "t", "X": ' + b"[" * 63 + b"]" * 63 + b"}"
    decoder.read_notification(decoder.unwrap(ok))
    deep = b'{"NotificationType": "X", "TaskId": "t", "X": ' + b"[" * 64 + b"]" * 64 + b"}"
    error = refused(deep)
    assert (error.field, error.expected) == ("body", "JSON nested at most 64 levels deep")
    # Brackets inside strings are text, not nesting.
    text = b'{"NotificationType": "X", "TaskId": "t", "X": "' + b"[" * 500 + b'"}'
    decoder.read_notification(decoder.unwrap(text))
    # And a CMQ envelope's msgBody is checked too.
    inner = orjson.dumps({"msgBody": deep.decode()})
    assert refused(inner).field == "msgBody"


@pytest.mark.parametrize(
    ("member", "value", "expected"),
    [
        ("TaskId", "t" * 257, "a string of 1 to 256 visible ASCII characters"),
        ("TaskId", "bad\nid", "a string of 1 to 256 visible ASCII characters"),
        ("TaskId", "任务", "a string of 1 to 256 visible ASCII characters"),
        ("NotificationType", "X" * 65, "a string of 1 to 64 visible ASCII characters"),
        ("NotificationType", "Ai\x00Review", "a string of 1 to 64 visible ASCII characters"),
        ("SessionContext", "c" * 1001, "a string of at most 1000 characters"),
    ],
)
def test_over_long_or_control_character_head_members_are_refused_by_name(
    member: str, value: str, expected: str
) -> None:
    error = refused(body({**REVIEW, member: value}))
    assert (error.field, error.expected) == (member, expected)


def test_lists_and_texts_are_capped_on_the_wire() -> None:
    doc = copy.deepcopy(REVIEW)
    item = doc["AiReviewResultInfo"]["ResultSet"][0]
    item["ImagePornResultSet"] = [{}] * (wire.MAX_ITEMS + 1)
    error = refused(body(doc))
    assert error.field == "AiReviewResultInfo.ResultSet[0].ImagePornResultSet"
    assert error.expected == f"an array of at most {wire.MAX_ITEMS} items"
    doc = copy.deepcopy(REVIEW)
    doc["AiReviewResultInfo"]["ResultSet"][0]["ImagePornResultSet"][0]["Label"] = "x" * (wire.MAX_TEXT + 1)
    error = refused(body(doc))
    assert error.field == "AiReviewResultInfo.ResultSet[0].ImagePornResultSet[0].Label"
    assert error.expected == f"a string of at most {wire.MAX_TEXT} characters"


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("ProcessEofInfo", "ErrCode"), True, "an integer"),  # a boolean is not a number
        (("ProcessEofInfo", "ErrCode"), 1.5, "an integer"),  # an integer refuses a fraction
        (("ProcessEofInfo", "ErrCode"), "0", "an integer"),
        (("LiveRecordResultInfo", "RecordOver"), -1, "an integer >= 0"),  # unsigned
        (("LiveRecordResultInfo", "FileResults"), {}, "an array"),
    ],
)
def test_scalars_take_exactly_their_wire_type(path: tuple[str, ...], value: Any, expected: str) -> None:
    doc: dict[str, Any] = {"NotificationType": "ProcessEof", "TaskId": "t", path[0]: {path[1]: value}}
    error = refused(body(doc))
    assert (error.field, error.expected) == (".".join(path), expected)


def test_booleans_and_strings_are_not_coerced() -> None:
    doc = copy.deepcopy(example("04-AiRecognitionResult-AsrTrans.adapted-from-doc.json"))
    full = doc["AiRecognitionResultInfo"]["ResultSet"][0]
    key = next(k for k in full if k.endswith("RecognitionResultSet") and full[k])
    full[key][0]["SteadyState"] = "true"
    error = refused(body(doc))
    assert error.expected == "a boolean"
    assert error.got == "a string"
    full[key][0]["SteadyState"] = 1
    assert refused(body(doc)).expected == "a boolean"


def test_quality_control_confidence_is_an_integer_as_the_sdk_types_it() -> None:
    doc = copy.deepcopy(QC)
    doc["AiQualityControlResultInfo"]["QualityControlResultSet"][0]["QualityControlItems"][0][
        "Confidence"
    ] = 7.5
    error = refused(body(doc))
    assert error.field.endswith("QualityControlItems[0].Confidence")
    assert error.expected == "an integer"


# --- the Sign out of what is kept -----------------------------------------------------------------


def test_the_top_level_pair_is_cut_out_of_the_bytes_and_nothing_else_changes() -> None:
    raw = example_bytes("07-AiQualityControlResult.constructed.json")
    kept = decoder.strip_sign(decoder.unwrap(raw))
    assert b'"Sign"' not in kept
    doc = orjson.loads(kept)
    assert "Timestamp" not in doc
    assert doc == {k: v for k, v in orjson.loads(raw).items() if k not in ("Timestamp", "Sign")}
    # The DiagnoseResult's own Timestamp (a PTS, not the signature's) stays where it is.
    assert all("Timestamp" in d for d in doc["AiQualityControlResultInfo"]["DiagnoseResultSet"])
    # What is left is the bytes as received, less the cut: byte for byte, not re-encoded.
    ops = difflib.SequenceMatcher(None, raw, kept, autojunk=False).get_opcodes()
    assert {op for op, *_ in ops} == {"equal", "delete"}
    deleted = b"".join(raw[i1:i2] for op, i1, i2, _, _ in ops if op == "delete")
    assert re.fullmatch(rb'[\s,]*"(Timestamp|Sign)"[^,]*[\s,]*"(Timestamp|Sign)"[^,]*[\s,]*', deleted), (
        deleted
    )


@pytest.mark.parametrize(
    "raw",
    [
        b'{"Sign":"a", "Timestamp": 5, "NotificationType":"X","TaskId":"t"}',
        b'{"NotificationType":"X","TaskId":"t","Sign":"a","Timestamp":5}',
        b'{"NotificationType":"X","Sign" : "a" ,"TaskId":"t" , "Timestamp" :5 }',
        b'{"NotificationType":"X","TaskId":"t","Note":"\\"Sign\\":\\"x\\"","Sign":"a"}',
        b'{"Timestamp":5,"Sign":"a"}',
    ],
)
def test_cutting_keeps_valid_json_wherever_the_pair_stands(raw: bytes) -> None:
    expected = {k: v for k, v in orjson.loads(raw).items() if k not in ("Timestamp", "Sign")}
    assert orjson.loads(decoder.strip_sign(raw)) == expected
    head = msgspec.json.decode(raw, type=Loose)  # the head ingest would have read
    assert orjson.loads(decoder.strip_sign(raw, head=head)) == expected  # type: ignore[arg-type]


class Loose(msgspec.Struct, rename="pascal"):
    """Just the members ``strip_sign`` reads off a head (the cases above have no TaskId)."""

    timestamp: int | None = None
    sign: str | None = None


@pytest.mark.parametrize(
    "raw",
    [
        # The same member text twice (nested too), a value written with an escape, a null member,
        # the pair only nested: the fast path must not guess; what is kept is right all the same.
        b'{"Sign":"ab","X":{"Sign":"ab"},"Timestamp":5}',
        b'{"Sign":"\\u0061b","Timestamp":5}',
        b'{"Sign":null,"Timestamp":5}',
        b'{"X":{"Sign":"ab","Timestamp":5}}',
        b'{"Timestamp":50,"X":{"Timestamp":5}}',
    ],
)
def test_the_fast_cut_never_guesses(raw: bytes) -> None:
    head = msgspec.json.decode(raw, type=Loose)
    kept = orjson.loads(decoder.strip_sign(raw, head=head))  # type: ignore[arg-type]
    doc = orjson.loads(raw)
    assert kept == {k: v for k, v in doc.items() if k not in ("Timestamp", "Sign")}


def test_refused_bodies_are_scrubbed_too_json_or_not() -> None:
    wrapped = orjson.dumps({"Response": {"TaskId": "t", "Timestamp": 5, "Sign": "abc"}})
    assert orjson.loads(decoder.scrub(wrapped)) == {"Response": {"TaskId": "t"}}
    garbage = b'not json "Timestamp": 1750248641, "Sign": "346b893046b0346403af24a6e22331c4" trailing'
    scrubbed = decoder.scrub(garbage)
    assert b"346b893046b0346403af24a6e22331c4" not in scrubbed
    assert b"1750248641" not in scrubbed
    assert scrubbed.startswith(b"not json")
    assert scrubbed.endswith(b"trailing")


# --- every scalar of every example, replaced by each wrong JSON type --------------------------------

WRONG = {"bool": True, "int": 7, "float": 7.5, "str": "seven", "array": [1], "object": {"a": 1}}


def _kind(t: msgspec.inspect.Type) -> str | None:
    """The JSON kind a typed scalar member takes, or None where the member is not a scalar."""
    if isinstance(t, msgspec.inspect.UnionType):
        [t] = [x for x in t.types if not isinstance(x, msgspec.inspect.NoneType)]
    for cls, kind in (
        (msgspec.inspect.BoolType, "bool"),
        (msgspec.inspect.IntType, "int"),
        (msgspec.inspect.FloatType, "float"),
        (msgspec.inspect.StrType, "str"),
    ):
        if isinstance(t, cls):
            return kind
    return None


def _unwrapped(t: msgspec.inspect.Type) -> msgspec.inspect.Type:
    if isinstance(t, msgspec.inspect.UnionType):
        [t] = [x for x in t.types if not isinstance(x, msgspec.inspect.NoneType)]
    return t


def typed_scalars(value: Any, t: msgspec.inspect.Type, path: tuple[str | int, ...] = ()) -> Any:
    """(path, kind) of every scalar in ``value`` that the wire Structs type."""
    t = _unwrapped(t)
    if isinstance(t, msgspec.inspect.StructType) and isinstance(value, dict):
        fields = {f.encode_name: f.type for f in t.fields}
        for key, member in value.items():
            if key in fields and member is not None:
                yield from typed_scalars(member, fields[key], (*path, key))
    elif isinstance(t, msgspec.inspect.ListType) and isinstance(value, list):
        for i, item in enumerate(value):
            yield from typed_scalars(item, t.item_type, (*path, i))
    elif (kind := _kind(t)) is not None:
        yield path, kind


def dotted(path: tuple[str | int, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(path))


def replaced(doc: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    node: Any = out
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return out


NOTIFICATION_TYPE = msgspec.inspect.type_info(wire.Notification)


@pytest.mark.parametrize("name", NOTIFICATION_FILES)
def test_every_scalar_replaced_by_each_wrong_json_type_is_a_400_naming_it(name: str) -> None:
    doc = example(name)
    leaves = list(typed_scalars(doc, NOTIFICATION_TYPE))
    assert len(leaves) >= 5  # the walk found the example's members
    checked = 0
    for path, kind in leaves:
        for wrong_kind, wrong in WRONG.items():
            if wrong_kind == kind or (kind == "float" and wrong_kind == "int"):
                continue  # the right kind (JSON has one number type: an integer is a fine float)
            error = refused(body(replaced(doc, path, wrong)))
            assert error.field == dotted(path), (path, wrong_kind, error)
            checked += 1
    assert checked >= 4 * len(leaves)


@pytest.mark.parametrize(
    "raw",
    [
        example_bytes("03-AiReviewResult-Image.constructed.json"),
        orjson.dumps({"Response": orjson.loads(example_bytes("03-AiReviewResult-Image.constructed.json"))}),
        orjson.dumps({"msgBody": example_bytes("08-LiveRecordResult.constructed.json").decode()}),
    ],
)
def test_reading_at_once_gives_what_unwrap_then_read_head_give(raw: bytes) -> None:
    body = decoder.unwrap(raw)
    assert decoder.read(raw) == (body, decoder.read_head(body))
    assert decoder.read(raw.decode()) == (body, decoder.read_head(body))


def test_a_pair_named_twice_is_cut_at_the_top_level_only() -> None:
    doc = orjson.loads(example_bytes("03-AiReviewResult-Image.constructed.json"))
    doc["Extra"] = {"Timestamp": doc["Timestamp"], "Sign": doc["Sign"]}  # the same text, nested
    nested_first = orjson.dumps({"Extra": doc.pop("Extra"), **doc})
    head = decoder.read_head(nested_first)
    cut = orjson.loads(decoder.strip_sign(nested_first, head=head))
    assert "Timestamp" not in cut
    assert "Sign" not in cut
    assert cut["Extra"] == {"Timestamp": head.timestamp, "Sign": head.sign}
