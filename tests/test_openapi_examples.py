"""Every example in the OpenAPI document is valid: request examples are sent and must succeed, response
examples must validate against their models. An example this test cannot place fails it."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

import app.schemas
from app.schemas import MAX_TRANSCRIPT_CHARS


def example_locations(node: Any, path: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Where the document holds `example` / `examples` keys."""
    found: set[tuple[str, ...]] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("example", "examples") and not (path and path[-1] == "properties"):
                found.add((*path, key))
            found |= example_locations(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found |= example_locations(value, (*path, str(i)))
    return found


def request_examples(content: dict[str, Any]) -> list[Any]:
    values = [content["example"]] if "example" in content else []
    values += [e["value"] for e in content.get("examples", {}).values()]
    values += content.get("schema", {}).get("examples", [])
    return values


def test_every_openapi_example_is_executed_and_succeeds(tiny_client: TestClient) -> None:
    spec = tiny_client.get("/openapi.json").json()
    checked: set[tuple[str, ...]] = set()
    sent = 0
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for media, content in operation.get("requestBody", {}).get("content", {}).items():
                for key in ("example", "examples"):
                    checked.add(("paths", path, method, "requestBody", "content", media, key))
                    checked.add(("paths", path, method, "requestBody", "content", media, "schema", key))
                url = path.replace("{conversation_id}", f"openapi-example-{sent}")
                for value in request_examples(content):
                    if media == "application/json":
                        response = tiny_client.request(method, url, json=value)
                    else:
                        assert media == "multipart/form-data", media
                        form = {name: (None, str(field)) for name, field in value.items()}
                        response = tiny_client.request(method, url, files=form)
                    assert response.status_code < 300, (path, media, response.text)
                    sent += 1
    for name, schema in spec["components"]["schemas"].items():
        checked.add(("components", "schemas", name, "examples"))
        for value in schema.get("examples", []):
            model = getattr(app.schemas, name)
            assert model.model_validate(value).model_dump(mode="json") == value
    assert sent >= 3  # two JSON examples (text, audio) and the form's
    assert example_locations(spec) <= checked, example_locations(spec) - checked


def test_openapi_documents_the_transcript_cap(tiny_client: TestClient) -> None:
    spec = tiny_client.get("/openapi.json").json()
    body = spec["paths"]["/conversations/{conversation_id}/utterances"]["post"]["requestBody"]["content"]
    for media in ("application/json", "multipart/form-data"):
        transcript = body[media]["schema"]["properties"]["transcript"]
        text = str(transcript)
        assert str(MAX_TRANSCRIPT_CHARS) in text and "20,000 characters" in transcript.get(
            "description", ""
        ) + str(transcript.get("anyOf", ""))
    too_long = tiny_client.post(
        "/conversations/cap/utterances", json={"transcript": "x" * (MAX_TRANSCRIPT_CHARS + 1)}
    )
    assert too_long.status_code == 422
