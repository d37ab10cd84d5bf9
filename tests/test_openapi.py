"""The served OpenAPI document publishes submit's real request schema, and its references resolve."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from receiver.app import create_app
from receiver.settings import Settings
from receiver.submit import SubmitRequest


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


async def test_openapi_json_publishes_the_submit_request_model_and_an_example_it_accepts(
    tmp_path: Path, aiohttp_client: Any
) -> None:
    settings = Settings.model_validate({"store": {"url": f"sqlite:///{tmp_path}/openapi.db"}})
    client = await aiohttp_client(create_app(settings))
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    assert doc["openapi"].startswith("3.1")  # JSON Schema 2020-12: pydantic's schemas as they are
    body = doc["paths"]["/v1/tasks/submit"]["post"]["requestBody"]["content"]["application/json"]
    schemas = doc["components"]["schemas"]
    assert body["schema"] == {"$ref": "#/components/schemas/SubmitRequest"}
    published = schemas["SubmitRequest"]
    assert set(published["properties"]) == {f.alias for f in SubmitRequest.model_fields.values()}
    assert published["required"] == ["Url", "TaskNotifyConfig"]
    assert published["additionalProperties"] is False  # an unknown member is a 400, as documented
    notify = schemas["NotifyConfig"]["properties"]["NotifyType"]
    assert notify["enum"] == ["URL", "TDMQ-CMQ", "CMQ"]
    SubmitRequest.model_validate(body["example"])  # the example is one the handler takes
    prefix = "#/components/schemas/"
    assert all(ref.startswith(prefix) and ref[len(prefix) :] in schemas for ref in refs(doc))
    assert "nullable" not in str(doc)  # OpenAPI 3.0 only; 3.1 says "type": [..., "null"]


async def test_every_route_is_in_the_document_and_every_documented_route_is_served(tmp_path: Path) -> None:
    settings = Settings.model_validate({"store": {"url": f"sqlite:///{tmp_path}/openapi.db"}})
    app = create_app(settings)
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
        and route.method not in ("HEAD", "*")  # (the webhook's path answers 405 to other methods)
        and route.resource.canonical != "/openapi.json"
        # The console's pages are HTML for a browser, not API (its own tests cover them).
        and not route.resource.canonical.startswith("/console")
        and route.resource.canonical != "/"
    }
    from receiver.http.openapi import document

    documented = {(method, path) for path, item in document()["paths"].items() for method in item}
    assert served == documented
    assert ("get", "/v1/operator-events") in documented
