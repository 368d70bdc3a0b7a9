"""The ticket API seen from a test: small wrappers and the common paths through the workflow."""

from __future__ import annotations

from typing import Any

from tests.conftest import World


class Api:
    """Small wrapper over the client for the ticket endpoints."""

    def __init__(self, client, world: World) -> None:  # type: ignore[no-untyped-def]
        self.client, self.world = client, world

    async def act(self, org: str, ticket_id: int, action: str, **fields: Any) -> tuple[int, dict[str, Any]]:
        """Post an action; when it is refused for access (401, 403, 404) the ticket must be exactly as it was."""
        before = await self._as_operator(ticket_id)
        resp = await self.client.post(
            f"/api/v1/tickets/{ticket_id}/actions", json={"action": action, **fields}, headers=self.world.auth(org)
        )
        body = await resp.json()
        if resp.status in (401, 403, 404) and before is not None:
            assert await self._as_operator(ticket_id) == before, f"a refused {action} by {org} changed the ticket"
        return resp.status, body

    async def _as_operator(self, ticket_id: int) -> dict[str, Any] | None:
        resp = await self.client.get(f"/api/v1/tickets/{ticket_id}", headers=self.world.auth("operator"))
        return await resp.json() if resp.status == 200 else None

    async def ok(self, org: str, ticket_id: int, action: str, **fields: Any) -> dict[str, Any]:
        status, body = await self.act(org, ticket_id, action, **fields)
        assert status == 200, body
        return body

    async def get(self, org: str, ticket_id: int) -> tuple[int, dict[str, Any]]:
        resp = await self.client.get(f"/api/v1/tickets/{ticket_id}", headers=self.world.auth(org))
        return resp.status, await resp.json()

    async def ticket(self, org: str, ticket_id: int) -> dict[str, Any]:
        status, body = await self.get(org, ticket_id)
        assert status == 200, body
        return body

    async def list(self, org: str, **query: Any) -> tuple[int, dict[str, Any]]:
        resp = await self.client.get("/api/v1/tickets", params={k: str(v) for k, v in query.items()}, headers=self.world.auth(org))
        return resp.status, await resp.json()

    # Common paths through the workflow.

    async def transferred(self, ticket_id: int, approval: str = "hanbin", unit: str | None = None) -> dict[str, Any]:
        return await self.ok(approval, ticket_id, "transfer", **({"unit": unit} if unit else {}))

    async def in_progress(
        self, ticket_id: int, category: str = "general", approval: str = "hanbin", unit: str = "hanbin-market"
    ) -> dict[str, Any]:
        await self.transferred(ticket_id, approval)
        return await self.ok(unit, ticket_id, "accept", category=category)

    async def resolved(self, ticket_id: int, approval: str = "hanbin", unit: str = "hanbin-market") -> dict[str, Any]:
        await self.in_progress(ticket_id, approval=approval, unit=unit)
        return await self.ok(unit, ticket_id, "resolve", rectification="retrained the window staff", reply="已对窗口人员开展业务培训，感谢监督。")
