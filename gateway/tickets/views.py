"""Department API for work orders: thin views over gateway.tickets (list, read, act, contact)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import RootModel, ValidationError

from gateway.tickets.actions import apply_action
from gateway.tickets.errors import TicketNotFound
from gateway.tickets.queries import list_tickets, read_contact, ticket_detail
from gateway.tickets.schemas import (
    ACTION_NAMES,
    MAX_ID,
    ActionIn,
    ContactRead,
    TicketAction,
    TicketDetail,
    TicketPage,
    TicketQuery,
)
from gateway.web.http import ApiError, parse_query, read_json, require_caller
from gateway.web.keys import DEPS, DISPATCHER, STORE
from gateway.web.operations import Operation, PathParam

routes = web.RouteTableDef()

_TICKET_ID = PathParam("id", "the ticket id", maximum=MAX_ID, example=1)


class _Body(RootModel[dict[str, Any]]):
    """Any JSON object; the action's own model validates it next."""


def parse_action(data: dict[str, Any]) -> TicketAction:
    """Validate an action body; errors name the field as the client wrote it (`evidence`, not `appeal.evidence`)."""
    name = data.get("action")
    if not isinstance(name, str) or name not in ACTION_NAMES:
        raise ApiError(422, "invalid", f"action must be one of: {', '.join(ACTION_NAMES)}", field="action")
    try:
        return ActionIn.model_validate(data).root
    except ValidationError as exc:
        details = []
        for err in exc.errors(include_url=False, include_input=False):
            loc = [str(p) for p in err["loc"]]
            if loc and loc[0] == name:
                loc = loc[1:]
            details.append({"field": ".".join(loc) or None, "message": err["msg"].removeprefix("Value error, ")})
        first = details[0]
        message = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
        raise ApiError(422, "invalid", f"{name}: {message}", field=first["field"], details=details) from None


def _ticket_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    # Longer digit strings cannot name a ticket; answer as for any unknown id, before touching the database.
    if len(raw) > 10 or not 1 <= int(raw) <= MAX_ID:
        raise TicketNotFound(None)
    return int(raw)


@routes.get("/api/v1/tickets")
async def list_view(request: web.Request) -> web.Response:
    caller = await require_caller(request)
    query = parse_query(request, TicketQuery)
    async with request.app[STORE].transaction() as session:
        page = await list_tickets(session, caller=caller, query=query, deps=request.app[DEPS])
    return web.json_response(page.model_dump(mode="json"))


@routes.get(r"/api/v1/tickets/{id:\d+}")
async def detail_view(request: web.Request) -> web.Response:
    caller = await require_caller(request)
    ticket_id = _ticket_id(request)
    async with request.app[STORE].transaction() as session:
        detail = await ticket_detail(session, caller=caller, ticket_id=ticket_id, deps=request.app[DEPS])
    return web.json_response(detail.model_dump(mode="json"))


@routes.post(r"/api/v1/tickets/{id:\d+}/actions")
async def action_view(request: web.Request) -> web.Response:
    caller = await require_caller(request)
    ticket_id = _ticket_id(request)
    action = parse_action((await read_json(request, _Body)).root)
    deps = request.app[DEPS]
    async with request.app[STORE].transaction() as session:
        event = await apply_action(session, ticket_id=ticket_id, action=action, actor=caller, deps=deps)
        detail = await ticket_detail(session, caller=caller, ticket_id=ticket_id, deps=deps)
    if event.action == "resolve":
        request.app[DISPATCHER].wake()
    return web.json_response(detail.model_dump(mode="json"))


@routes.get(r"/api/v1/tickets/{id:\d+}/contact")
async def contact_view(request: web.Request) -> web.Response:
    caller = await require_caller(request)
    ticket_id = _ticket_id(request)
    async with request.app[STORE].transaction() as session:
        contact = await read_contact(session, caller=caller, ticket_id=ticket_id, deps=request.app[DEPS])
    return web.json_response(contact.model_dump(mode="json"), headers={"Cache-Control": "no-store"})


OPERATIONS = [
    Operation(
        "GET",
        "/api/v1/tickets",
        "List work orders in your jurisdiction",
        tag="tickets",
        operation_id="listTickets",
        query=TicketQuery,
        response=TicketPage,
        description="Newest first. Page with `limit` and the `next_cursor` of the previous page.",
        errors=(401, 422),
    ),
    Operation(
        "GET",
        "/api/v1/tickets/{id}",
        "Read one work order with its history",
        tag="tickets",
        operation_id="getTicket",
        path_params=(_TICKET_ID,),
        response=TicketDetail,
        description="The evaluator's phone number is masked; `allowed_actions` lists what you may do next.",
        errors=(401, 404),
    ),
    Operation(
        "POST",
        "/api/v1/tickets/{id}/actions",
        "Take an action on a work order",
        tag="tickets",
        operation_id="actOnTicket",
        path_params=(_TICKET_ID,),
        body=ActionIn,
        response=TicketDetail,
        description=(
            "One action per call, named by `action`. 403: your role may not take it; 404: not in your "
            "jurisdiction; 409: not allowed in the ticket's status (or stale `expected_version`); "
            "422: invalid input or a window that has closed (`deadline_passed`)."
        ),
        errors=(400, 401, 403, 404, 409, 415, 422),
    ),
    Operation(
        "GET",
        "/api/v1/tickets/{id}/contact",
        "Read the evaluator's full phone number (handling unit only)",
        tag="tickets",
        operation_id="getTicketContact",
        path_params=(_TICKET_ID,),
        response=ContactRead,
        description="Each read is logged (Art. 16(四)). Other organisations get 403.",
        errors=(401, 403, 404),
    ),
]
