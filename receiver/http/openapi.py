"""The OpenAPI 3.1 document of the HTTP API, served at ``GET /openapi.json``.

Request bodies that a pydantic model validates are published from that model's own JSON Schema
(OpenAPI 3.1 is JSON Schema 2020-12, what pydantic writes), so the document cannot drift from
what the handler accepts.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel

from receiver.notices import KINDS as OPERATOR_KINDS
from receiver.ports import MIN_TEXT
from receiver.submit import SubmitRequest
from receiver.tasks import TaskState

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": "string"},
                "expected": {"type": "string"},
            },
        }
    },
}
OBJECT = {"type": "object", "additionalProperties": True}
PAGE = {
    "type": "object",
    "required": ["items", "next"],
    "properties": {"items": {"type": "array", "items": OBJECT}, "next": {"type": ["string", "null"]}},
}
# A request MPS (and the emulator) accepts: fuzzers start from it, readers copy it.
SUBMIT_EXAMPLE = {
    "Url": "rtmp://live.example.com/app/stream-1",
    "TaskNotifyConfig": {
        "NotifyType": "TDMQ-CMQ",
        "CmqModel": "Queue",
        "CmqRegion": "gz",
        "QueueName": "mps-notifications",
    },
    "AiContentReviewTask": {"Definition": 10},
    "Labels": {"room": "lobby"},
}


def _model_schemas(model: type[BaseModel]) -> dict[str, Any]:
    """The model's schema and those of the models it nests, keyed by name for ``components``."""
    schema = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
    nested: dict[str, Any] = schema.pop("$defs", {})
    return {**nested, model.__name__: schema}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


MANAGEMENT_ERRORS = {
    "400": _error("a parameter is not what was expected; the body names it"),
    "401": _error("missing or wrong bearer token"),
    "403": _error("the Host or Origin header names a host not in http.allowed_hosts"),
    "408": _error("the body did not arrive within http.body_timeout"),
    "415": _error("a state change not sent as Content-Type: application/json"),
    "503": _error("the store is unavailable"),
}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


LIMIT = _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page size (default 100)")
CURSOR = _query("cursor", {"type": "string"}, "the `next` of the previous page")
TASK_PATH = {"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}}


@functools.cache  # built once, on the first request for it
def document() -> dict[str, Any]:
    secured: list[dict[str, list[str]]] = [{"bearer": []}]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "receiver",
            "version": "0.1.0",
            "description": "MPS live-stream notifications, received.",
        },
        "components": {
            "schemas": {"Error": ERROR, **_model_schemas(SubmitRequest)},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/v1/notifications": {
                "post": {
                    "summary": "The MPS webhook (NotifyUrl): one notification, protected by its Sign",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": OBJECT}}},
                    "responses": {
                        "200": _json(
                            "stored (or already stored)",
                            {"type": "object", "properties": {"code": {"type": "integer"}}},
                        ),
                        "400": _error("not a notification; the body names the field"),
                        "401": _error("bad, missing or expired signature"),
                        "408": _error("the body did not arrive within http.body_timeout"),
                        "413": _error("the body is over the limit"),
                        "422": _error("the store can never take it (kept in quarantine)"),
                        "503": _error("the store is unavailable: retry later"),
                    },
                }
            },
            "/v1/tasks": {
                "get": {
                    "security": secured,
                    "parameters": [
                        _query(
                            "state",
                            {"type": "string", "enum": [s.value for s in TaskState]},
                            "only tasks in this state",
                        ),
                        LIMIT,
                        CURSOR,
                    ],
                    "responses": {"200": _json("a page of tasks", PAGE), **MANAGEMENT_ERRORS},
                },
                "post": {
                    "security": secured,
                    "summary": "Register a task submitted elsewhere",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["task_id"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "task_id": {"type": "string", "minLength": 1, "maxLength": 256},
                                        "session_id": {"type": "string", "maxLength": 50},
                                        "session_context": {"type": "string", "maxLength": 1000},
                                        "url": {"type": "string", "maxLength": 4096},
                                        "labels": {
                                            "type": "object",
                                            "additionalProperties": {"type": "string"},
                                        },
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "201": _json("the task", OBJECT),
                        "409": _error("task_id already registered"),
                        **MANAGEMENT_ERRORS,
                    },
                },
            },
            "/v1/tasks/submit": {
                "post": {
                    "security": secured,
                    "summary": "Start a task through ProcessLiveStream",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/SubmitRequest"},
                                "example": SUBMIT_EXAMPLE,
                            }
                        },
                    },
                    "responses": {
                        "201": _json("the task, submitted", OBJECT),
                        "409": _error(
                            "InvalidParameterValue.SessionId: the SessionId was used in the last 7 days"
                        ),
                        "502": _error("MPS refused (AuthFailure.*, ...); the code is named"),
                        **MANAGEMENT_ERRORS,
                        "503": _error(
                            "the store is unavailable, submitting is not configured, or MPS's rate limit"
                            " held after the retries"
                        ),
                    },
                }
            },
            "/v1/tasks/{task_id}": {
                "get": {
                    "security": secured,
                    "parameters": [TASK_PATH],
                    "responses": {
                        "200": _json("the task", OBJECT),
                        "404": _error("no such task"),
                        **MANAGEMENT_ERRORS,
                    },
                }
            },
            "/v1/tasks/{task_id}/abort": {
                "post": {
                    "security": secured,
                    "summary": "Abort a task through ManageTask (OperationType=Abort): it shows aborting"
                    " until a ProcessEof or a reconcile confirms its end",
                    # No member is read, but a state change comes as JSON (see guards.py).
                    "requestBody": {"required": True, "content": {"application/json": {"schema": OBJECT}}},
                    "parameters": [TASK_PATH],
                    "responses": {
                        "202": _json(
                            "the task, aborting; abort_request_id is ManageTask's RequestId", OBJECT
                        ),
                        "404": _error("no such task, or MPS does not know its TaskId (mps_code names it)"),
                        "409": _error(
                            "the task has ended, has no TaskId yet, or MPS says it is not processing"
                            " (InvalidParameterValue.NotProcessingTask)"
                        ),
                        "502": _error("MPS refused (AuthFailure.*, ...); the code is named"),
                        **MANAGEMENT_ERRORS,
                        "503": _error(
                            "the store is unavailable, asking MPS is not configured, or the budget of"
                            " 20 requests/s is spent"
                        ),
                    },
                }
            },
            "/v1/tasks/{task_id}/events": {
                "get": {
                    "security": secured,
                    "parameters": [TASK_PATH, LIMIT, CURSOR],
                    "responses": {
                        "200": _json("its events, in the order received", PAGE),
                        "404": _error("no such task"),
                        **MANAGEMENT_ERRORS,
                    },
                }
            },
            "/v1/events": {
                "get": {
                    "security": secured,
                    "parameters": [
                        _query("task_id", {"type": "string"}, "MPS TaskId"),
                        _query("type", {"type": "string"}, "NotificationType"),
                        _query("since", {"type": "string"}, "received at or after: unix seconds or ISO 8601"),
                        _query("until", {"type": "string"}, "received before: unix seconds or ISO 8601"),
                        _query("orphan", {"type": "string", "enum": ["true", "false"]}, "only (not) orphans"),
                        _query("kind", {"type": "string"}, "a finding of this kind (e.g. ImagePorn)"),
                        _query("label", {"type": "string"}, "a finding with this label"),
                        _query(
                            "suggestion",
                            {"type": "string"},
                            "a finding with this suggestion (block, review, pass)",
                        ),
                        _query("min_confidence", {"type": "number"}, "a finding at least this confident"),
                        _query(
                            "text",
                            {"type": "string", "minLength": MIN_TEXT},
                            "a case-insensitive substring (2 characters or more, any script) of the"
                            " recognized text: speech, OCR, translations, subtitles",
                        ),
                        _query(
                            "order",
                            {"type": "string", "enum": ["asc", "desc"]},
                            "oldest (default) or newest first",
                        ),
                        LIMIT,
                        CURSOR,
                    ],
                    "description": "The finding conditions (kind, label, suggestion, min_confidence) are"
                    " met together by one finding of the event, as sink filters have them. A page may"
                    " hold fewer than `limit` events while `next` is set: follow it until it is null.",
                    "responses": {"200": _json("a page of events", PAGE), **MANAGEMENT_ERRORS},
                }
            },
            "/v1/quarantine": {
                "get": {
                    "security": secured,
                    "parameters": [LIMIT, CURSOR],
                    "responses": {"200": _json("a page", PAGE), **MANAGEMENT_ERRORS},
                }
            },
            "/v1/deliveries": {
                "get": {
                    "security": secured,
                    "parameters": [
                        _query("sink", {"type": "string"}, "sink name"),
                        _query(
                            "state", {"type": "string", "enum": ["pending", "delivered", "dead"]}, "state"
                        ),
                        _query("task_id", {"type": "string"}, "MPS TaskId"),
                        _query("type", {"type": "string"}, "NotificationType"),
                        LIMIT,
                        CURSOR,
                    ],
                    "responses": {"200": _json("a page of deliveries", PAGE), **MANAGEMENT_ERRORS},
                }
            },
            "/v1/deliveries/{id}/attempts": {
                "get": {
                    "security": secured,
                    "summary": "One delivery and its attempts, oldest first",
                    "parameters": [
                        {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
                    ],
                    "responses": {
                        "200": _json(
                            "the delivery and its attempts: time, outcome, error, HTTP status, latency,"
                            " the first bytes of the answer",
                            {
                                "type": "object",
                                "required": ["delivery", "items"],
                                "properties": {
                                    "delivery": OBJECT,
                                    "items": {"type": "array", "items": OBJECT},
                                },
                            },
                        ),
                        "404": _error("no such delivery"),
                        **MANAGEMENT_ERRORS,
                    },
                }
            },
            "/v1/deliveries/redrive": {
                "post": {
                    "security": secured,
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "properties": {
                                        "sink": {"type": "string"},
                                        "state": {"type": "string", "enum": ["pending", "delivered", "dead"]},
                                        "task_id": {"type": "string"},
                                        "type": {"type": "string"},
                                        "since": {"type": "string"},
                                        "until": {"type": "string"},
                                        "dry_run": {"type": "boolean"},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {"200": _json("how many", OBJECT), **MANAGEMENT_ERRORS},
                }
            },
            "/v1/sinks": {
                "get": {
                    "security": secured,
                    "summary": "Per sink: backlog, delivered, dead, oldest undelivered, breaker, rate limit",
                    "responses": {"200": _json("per sink", OBJECT), **MANAGEMENT_ERRORS},
                }
            },
            "/v1/operator-events": {
                "get": {
                    "security": secured,
                    "summary": "receiver's own operator events, oldest first (one per kind, subject, window)",
                    "parameters": [
                        _query(
                            "kind",
                            {"type": "string", "enum": list(OPERATOR_KINDS)},
                            "only events of this kind",
                        ),
                        LIMIT,
                        CURSOR,
                    ],
                    "responses": {"200": _json("a page of operator events", PAGE), **MANAGEMENT_ERRORS},
                }
            },
            "/v1/sinks/{name}/enable": {
                "post": {
                    "security": secured,
                    # No member is read, but a state change comes as JSON (see guards.py).
                    "requestBody": {"required": True, "content": {"application/json": {"schema": OBJECT}}},
                    "parameters": [
                        {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "responses": {
                        "200": _json("switched back on", OBJECT),
                        "404": _error("no sink of that name is configured"),
                        **MANAGEMENT_ERRORS,
                    },
                }
            },
            "/healthz": {"get": {"responses": {"200": _json("alive", OBJECT)}}},
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics (text exposition format)",
                    "responses": {
                        "200": {
                            "description": "the metrics",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/readyz": {
                "get": {"responses": {"200": _json("ready", OBJECT), "503": _json("not ready", OBJECT)}}
            },
        },
    }
