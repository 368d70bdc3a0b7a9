"""The HTTP edge as outside tools see it: methods, bounds, number forms, framing, jurisdiction, start-up errors."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from gateway.callbacks.schemas import CampaignIn
from gateway.tickets.schemas import MAX_ID
from tests.gateway.evaluations.helpers import report


async def test_405_says_which_methods_are_allowed(client, world):
    resp = await client.put("/api/v1/cases", json={}, headers=world.auth("hanbin-market"))
    assert resp.status == 405 and resp.headers["Allow"] == "POST"
    assert (await resp.json())["error"]["code"] == "method_not_allowed"
    resp = await client.delete("/api/v1/evaluations")
    assert resp.status == 405 and set(resp.headers["Allow"].split(",")) >= {"GET", "POST"}


@pytest.mark.parametrize(("query", "field"), [
    ("limit=0", "limit"), ("limit=501", "limit"), ("limit=-1", "limit"), ("limit=x", "limit"), ("limit=1.5", "limit"),
    ("before_id=0", "before_id"), ("before_id=2147483648", "before_id"),
])
async def test_evaluation_list_bounds_are_the_documented_ones(client, world, query, field):
    resp = await client.get(f"/api/v1/evaluations?{query}", headers=world.auth("hanbin"))
    body = await resp.json()
    assert resp.status == 422 and body["error"]["field"] == field, body


async def test_evaluation_list_takes_its_bounds(client, world):
    for query in ("limit=1", "limit=500", "before_id=2147483647"):
        assert (await client.get(f"/api/v1/evaluations?{query}", headers=world.auth("hanbin"))).status == 200


async def test_whole_number_floats_are_integers(client, world):
    token = (await report(client, world))["invitation"]["token"]
    resp = await client.post(f"/r/{token}", json={"level": 2.0, "reasons": [213.0]})
    body = await resp.json()
    assert resp.status == 201, body


@pytest.mark.parametrize("level", [4.5, "4", True, float("1e400")])
async def test_other_forms_of_a_number_are_refused(client, world, level):
    token = (await report(client, world))["invitation"]["token"]
    resp = await client.post(f"/r/{token}", data=_json({"level": level}), headers={"Content-Type": "application/json"})
    body = await resp.json()
    assert resp.status == 422 and body["error"]["field"] == "level", body


def _json(value: object) -> str:
    import json

    return json.dumps(value).replace("Infinity", "1e400")


def test_campaign_ticket_ids_carry_their_bounds_into_the_document():
    items = CampaignIn.model_json_schema()["properties"]["ticket_ids"]["anyOf"][0]["items"]
    assert items["type"] == "integer" and items["minimum"] == 1 and items["maximum"] == MAX_ID
    assert CampaignIn.model_validate({"ticket_ids": [3.0, 3, 4]}).ticket_ids == [3, 4]


async def test_the_openapi_document_has_the_campaign_bounds(client):
    document = await (await client.get("/api/v1/openapi.json")).json()
    schema = document["components"]["schemas"]["CampaignIn"]["properties"]["ticket_ids"]
    items = next(s for s in schema["anyOf"] if s.get("type") == "array")["items"]
    assert items["minimum"] == 1 and items["maximum"] == MAX_ID


async def test_the_rating_page_may_not_be_framed(client, world):
    token = (await report(client, world))["invitation"]["token"]
    for resp in (await client.get(f"/r/{token}"), await client.get("/r/unknowntoken")):
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]


def _serve(tmp_path, port: int) -> subprocess.Popen[str]:
    env = {**os.environ, "GATEWAY_PORT": str(port), "GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/serve.db"}
    env.pop("GATEWAY_REDIS_URL", None)
    return subprocess.Popen([sys.executable, "-m", "gateway", "serve"], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_serve_on_a_port_in_use_says_so_in_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = _serve(tmp_path, port)
        out, err = process.communicate(timeout=120)
    assert process.returncode == 1
    assert "Traceback" not in err + out
    assert f"gateway: cannot listen on 127.0.0.1:{port}: address already in use" in err.splitlines()


@pytest.mark.parametrize("when", ["importing", "migrating"])
def test_serve_interrupted_while_starting_says_so_in_one_line(tmp_path, when):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = _serve(tmp_path, port)
    if when == "importing":
        time.sleep(0.3)
    else:
        assert process.stderr is not None
        process.stderr.readline()  # alembic's first line: the schema is being migrated
    process.send_signal(signal.SIGINT)
    try:
        out, err = process.communicate(timeout=120)
    finally:  # a process that went on starting is not left running with its pipes open
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert "Traceback" not in err + out, err[-2000:]
    assert process.returncode in (0, 130)


LIST_QUERIES = ["/api/v1/tickets", "/api/v1/fraud/flags", "/api/v1/campaigns/1/targets", "/api/v1/stats"]


@pytest.mark.parametrize("path", LIST_QUERIES)
@pytest.mark.parametrize(("query", "field"), [
    ("limit=5&limit=6", "limit"),  # given twice: which one was meant is not guessed
    ("limit=5%00", "limit"),
    ("colour=red", "colour"),
])
async def test_list_queries_are_read_one_way(client, world, path, query, field):
    # One reader for every list's query string (gateway.web.http.parse_query): the same refusals everywhere.
    resp = await client.get(f"{path}?{query}", headers=world.auth("operator"))
    body = await resp.json()
    assert resp.status == 422 and body["error"]["field"] == field, body
