"""Fraud flags to rule (Art. 19): the flags in the person's jurisdiction, one flag's evidence and evaluations,
and the ruling form. Reading and ruling go through `gateway.fraud.service`, as the API does.

Ruling is oversight: a supervisor (科室负责人) of the approval department of the flag's region rules; a
clerk reads. Every ruling is an audit row in the same transaction as the ruling.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from gateway.console import audit, texts
from gateway.console.web import PageError, Person, client_address, form, person, render
from gateway.fraud.schemas import MAX_ID, FlagDetail, FlagOut, FlagQuery, RulingIn
from gateway.fraud.service import AlreadyRuled, FlagNotFound, FraudForbidden, flag_detail, list_flags, rule_flag
from gateway.privacy import redact
from gateway.web.keys import DEPS, STORE

routes = web.RouteTableDef()

_MASKED = re.compile(r"\+?\d{2,4}\*{4}\d{4}")  # a number as redact() leaves it: not shown either
PER_PAGE = 50  # flags on a page of the list
RECENT_RULINGS = 10  # the latest rulings shown under the open flags
NOT_READER = "刷评线索由审批部门和平台运营方查看，承办单位不能查看。"
NOT_RULER = "只有审批部门的科室负责人可以认定刷评线索；经办人可以查看线索，请联系科室负责人认定。"


def _readable(p: Person) -> None:
    if not (p.caller.is_approval or p.caller.kind == "operator"):
        raise PageError(403, NOT_READER, title="无权查看")


def may_rule(p: Person) -> bool:
    return p.user.role == "supervisor" and p.caller.is_approval


def _flag_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if len(raw) > 10 or not 1 <= int(raw) <= MAX_ID:
        raise PageError(404, texts.FLAG_NOT_FOUND, title="未找到")
    return int(raw)


@routes.get("/fraud")
async def flags_page(request: web.Request) -> web.StreamResponse:
    """One state's flags, newest first, a page at a time (`before` = the last id of the previous page);
    optionally one rule's. The open ones by default, with the latest rulings below them."""
    p = person(request)
    _readable(p)
    wanted = {key: value for key, value in request.query.items() if value != ""}
    unknown = sorted(set(wanted) - {"status", "rule", "before"})
    status, rule, before = wanted.get("status", "open"), wanted.get("rule"), wanted.get("before")
    if unknown:
        raise PageError(422, f"无法识别的筛选条件：{'、'.join(unknown)}。", title="筛选条件有误")
    if status not in texts.FLAG_STATUS:
        raise PageError(422, "线索状态只能是待认定、认定属实或认定不属实。", title="筛选条件有误")
    if rule is not None and rule not in texts.FRAUD_RULE:
        raise PageError(422, "没有这条刷评规则。", title="筛选条件有误")
    if before is not None and not (before.isdigit() and len(before) <= 10 and 1 <= int(before) <= MAX_ID):
        raise PageError(422, "分页位置有误，请从第一页重新查看。", title="筛选条件有误")
    query = FlagQuery.model_validate({"status": status, "rule": rule, "before_id": before, "limit": PER_PAGE})
    recent: list[FlagOut] = []
    async with request.config_dict[STORE].transaction() as session:
        page = await list_flags(session, caller=p.caller, query=query)
        if status == "open" and before is None:
            for ruled in ("confirmed", "dismissed"):
                latest = FlagQuery.model_validate({"status": ruled, "rule": rule, "limit": RECENT_RULINGS})
                recent += (await list_flags(session, caller=p.caller, query=latest)).items
    recent.sort(key=lambda f: f.id, reverse=True)
    return render(
        request,
        "fraud_flags.html",
        status_choice=status,
        rule_choice=rule or "",
        flags=page.items,
        next_before=page.next_before_id,
        first_page=before is None,
        ruled=recent[:RECENT_RULINGS],
    )


def evidence_rows(detail: FlagDetail) -> list[tuple[str, str]]:
    """The rule's evidence, labelled in Chinese, as text without phone numbers, whole or masked (the
    evaluations are listed apart)."""
    rows = []
    for key, value in detail.evidence.items():
        if key == "evaluation_ids":
            continue
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        rows.append((texts.EVIDENCE.get(key, key), _MASKED.sub("（号码已隐去）", redact(text))[:2000]))
    return rows


def _detail_page(
    request: web.Request, p: Person, detail: FlagDetail, *, status: int = 200, **context: Any
) -> web.Response:
    return render(
        request,
        "fraud_flag.html",
        status=status,
        flag=detail,
        evidence=evidence_rows(detail),
        may_rule=may_rule(p),
        **context,
    )


@routes.get(r"/fraud/{id:\d+}")
async def flag_page(request: web.Request) -> web.StreamResponse:
    p = person(request)
    _readable(p)
    flag_id = _flag_id(request)
    async with request.config_dict[STORE].transaction() as session:
        try:
            detail = await flag_detail(session, caller=p.caller, flag_id=flag_id)
        except FlagNotFound:
            raise PageError(404, texts.FLAG_NOT_FOUND, title="未找到") from None
    return _detail_page(request, p, detail, ruled=request.query.get("ruled") == "1")


@routes.post(r"/fraud/{id:\d+}/ruling")
async def ruling(request: web.Request) -> web.StreamResponse:
    p = person(request)
    data = await form(request)
    _readable(p)
    flag_id = _flag_id(request)
    deps = request.config_dict[DEPS]
    store = request.config_dict[STORE]
    async with store.transaction() as session:
        try:
            detail = await flag_detail(session, caller=p.caller, flag_id=flag_id)
        except FlagNotFound:
            raise PageError(404, texts.FLAG_NOT_FOUND, title="未找到") from None
    if not may_rule(p):
        return _detail_page(request, p, detail, status=403, error=NOT_RULER)
    try:
        body = RulingIn.model_validate({"outcome": data.get("outcome", ""), "note": data.get("note", "")})
    except ValidationError as exc:
        field = str(exc.errors()[0]["loc"][0]) if exc.errors() and exc.errors()[0]["loc"] else "note"
        message = (
            "请选择认定结果（属实或不属实）。"
            if field == "outcome"
            else "请在「认定说明」中写明核实了什么（不超过2000字）。"
        )
        return _detail_page(request, p, detail, status=422, error=message, note=data.get("note", ""))
    try:
        async with store.transaction() as session:
            ruled = await rule_flag(session, caller=p.caller, flag_id=flag_id, ruling=body, deps=deps)
            audit.record(
                session,
                kind="fraud_ruling",
                at=deps.clock.now(),
                user=p.user,
                address=client_address(request),
                flag_id=flag_id,
                outcome=body.outcome,
                decisions_written=ruled.decisions_written,
            )
    except AlreadyRuled:
        async with store.transaction() as session:
            detail = await flag_detail(session, caller=p.caller, flag_id=flag_id)
        return _detail_page(request, p, detail, status=409, error="该线索已经认定过，认定结果不能更改。")
    except FraudForbidden:
        return _detail_page(request, p, detail, status=403, error="只有线索所在地区的审批部门可以认定（第十九条）。")
    raise web.HTTPSeeOther(f"/console/fraud/{flag_id}?ruled=1")
