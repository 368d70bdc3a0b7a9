"""GET /api/v1/openapi.json: a valid OpenAPI 3.1 document, generated from the code, covering every /api/v1 route."""

from __future__ import annotations

from openapi_spec_validator import validate

from gateway.tickets.schemas import ACTION_NAMES


async def _document(client) -> dict:  # type: ignore[no-untyped-def]
    resp = await client.get("/api/v1/openapi.json")  # public: it describes the API and holds no data
    assert resp.status == 200
    return await resp.json()


async def test_the_document_is_valid_openapi(client) -> None:  # type: ignore[no-untyped-def]
    document = await _document(client)
    assert document["openapi"].startswith("3.1")
    validate(document)


async def test_every_api_route_is_documented_and_nothing_else(client) -> None:  # type: ignore[no-untyped-def]
    document = await _document(client)
    registered = {
        (route.resource.canonical, route.method.lower())
        for route in client.app.router.routes()
        if route.resource is not None and route.resource.canonical.startswith("/api/v1/") and route.method != "HEAD"
    }
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert registered == documented
    assert {("/api/v1/cases", "post"), ("/api/v1/evaluations", "get"), ("/api/v1/evaluations", "post")} <= documented


async def test_department_calls_require_the_bearer_key(client) -> None:  # type: ignore[no-untyped-def]
    document = await _document(client)
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "the organisation's API key (gk_…)",
    }
    for path, item in document["paths"].items():
        for method, operation in item.items():
            expected = [] if path == "/api/v1/openapi.json" else [{"bearer": []}]
            assert operation["security"] == expected, (method, path)
            if expected:
                assert "401" in operation["responses"]


async def test_the_action_body_is_one_schema_per_action(client) -> None:  # type: ignore[no-untyped-def]
    document = await _document(client)
    body = document["paths"]["/api/v1/tickets/{id}/actions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    schema = document["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
    assert schema["discriminator"]["propertyName"] == "action"
    assert set(schema["discriminator"]["mapping"]) == set(ACTION_NAMES)
    appeal = document["components"]["schemas"]["Appeal"]
    assert appeal["additionalProperties"] is False and "evidence" in appeal["required"]
    params = {p["name"]: p for p in document["paths"]["/api/v1/tickets"]["get"]["parameters"]}
    assert set(params) == {
        "status", "region", "unit", "overdue", "level", "created_from", "created_to", "limit", "cursor", "case_no",
    }
    listed = {p["name"] for p in document["paths"]["/api/v1/evaluations"]["get"]["parameters"]}
    assert listed == {"limit", "before_id", "case_no", "token"}
    evaluation = document["components"]["schemas"]["EvaluationOut"]
    assert {"addenda", "current"} <= set(evaluation["properties"])
    assert params["overdue"]["schema"] == {"type": "boolean"}
