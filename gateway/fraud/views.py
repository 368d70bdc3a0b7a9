"""Department API for fraud flags (Art. 19): list, read and rule within jurisdiction; staff contact lists."""

from __future__ import annotations

from aiohttp import web

from gateway.fraud.schemas import MAX_ID, FlagDetail, FlagPage, FlagQuery, RulingIn, StaffContactsIn, StaffContactsOut
from gateway.fraud.service import FlagNotFound, flag_detail, list_flags, replace_staff_contacts, rule_flag
from gateway.web.http import parse_query, read_json, require_caller
from gateway.web.keys import DEPS, STORE
from gateway.web.operations import Operation, PathParam

routes = web.RouteTableDef()

_FLAG_ID = PathParam("id", "the flag id", maximum=MAX_ID, example=1)


def _flag_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if len(raw) > 10 or not 1 <= int(raw) <= MAX_ID:
        raise FlagNotFound(None)
    return int(raw)


@routes.get("/api/v1/fraud/flags")
async def list_view(request: web.Request) -> web.Response:
    caller = await require_caller(request)
    query = parse_query(request, FlagQuery)
    async with request.app[STORE].transaction() as session:
        page = await list_flags(session, caller=caller, query=query)
    return web.json_response(page.model_dump(mode="json"))


@routes.get(r"/api/v1/fraud/flags/{id:\d+}")
async def detail_view(request: web.Request) -> web.Response:
    caller = await require_caller(request)
    flag_id = _flag_id(request)
    async with request.app[STORE].transaction() as session:
        detail = await flag_detail(session, caller=caller, flag_id=flag_id)
    return web.json_response(detail.model_dump(mode="json"))


@routes.post(r"/api/v1/fraud/flags/{id:\d+}/ruling")
async def ruling_view(request: web.Request) -> web.Response:
    caller = await require_caller(request)
    flag_id = _flag_id(request)
    ruling = await read_json(request, RulingIn)
    async with request.app[STORE].transaction() as session:
        detail = await rule_flag(session, caller=caller, flag_id=flag_id, ruling=ruling, deps=request.app[DEPS])
    return web.json_response(detail.model_dump(mode="json"))


@routes.post("/api/v1/fraud/staff-contacts")
async def staff_contacts_view(request: web.Request) -> web.Response:
    caller = await require_caller(request)
    data = await read_json(request, StaffContactsIn)
    async with request.app[STORE].transaction() as session:
        out = await replace_staff_contacts(session, caller=caller, data=data, deps=request.app[DEPS])
    return web.json_response(out.model_dump(mode="json"))


OPERATIONS = [
    Operation(
        "GET",
        "/api/v1/fraud/flags",
        "List fraud flags in your jurisdiction",
        tag="fraud",
        operation_id="listFraudFlags",
        query=FlagQuery,
        response=FlagPage,
        errors=(401, 403, 422),
        description="Approval departments and the operator; newest first, page with `before_id`. Units get 403.",
    ),
    Operation(
        "GET",
        "/api/v1/fraud/flags/{id}",
        "Read one fraud flag with its evidence and evaluations",
        tag="fraud",
        operation_id="getFraudFlag",
        path_params=(_FLAG_ID,),
        response=FlagDetail,
        errors=(401, 403, 404),
        description="Raters' numbers are masked. Another region's flag is 404.",
    ),
    Operation(
        "POST",
        "/api/v1/fraud/flags/{id}/ruling",
        "Confirm or dismiss a fraud flag",
        tag="fraud",
        operation_id="ruleFraudFlag",
        path_params=(_FLAG_ID,),
        body=RulingIn,
        response=FlagDetail,
        errors=(400, 401, 403, 404, 409, 415, 422),
        description=(
            "The approval department of the flag's region rules once (409 after). Confirming writes one "
            "`evaluation_decision` (kind `fraud`) per good review in the flag: it stops counting but stays stored. "
            "Bad reviews keep counting until their work order's appeal is ruled."
        ),
    ),
    Operation(
        "POST",
        "/api/v1/fraud/staff-contacts",
        "Replace a unit's staff phone list",
        tag="fraud",
        operation_id="replaceStaffContacts",
        body=StaffContactsIn,
        response=StaffContactsOut,
        errors=(400, 401, 403, 415, 422),
        description=(
            "Numbers are stored only as keyed hashes; a rater whose number is on a list is flagged (staff_rater)."
        ),
    ),
]
