from tests.conftest import case_payload


async def test_report_case_and_health(client, world):
    resp = await client.get("/healthz")
    assert resp.status == 200
    resp = await client.post("/api/v1/cases", json=case_payload(), headers=world.auth("hanbin-market"))
    body = await resp.json()
    assert resp.status == 201, body
    assert body["created"] is True
    assert len(body["invitation"]["token"]) <= 16
