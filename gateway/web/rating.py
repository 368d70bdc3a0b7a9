"""The rating page: GET shows the service and the five one-tap buttons and never records anything
(SMS apps and chat clients prefetch links); POST records the rating."""

from __future__ import annotations

import io
from typing import Any
from zoneinfo import ZoneInfo

import segno
from aiohttp import web
from pydantic import ValidationError

from gateway.clock import as_utc
from gateway.evaluations.errors import AlreadyRated, EvaluationError, InvitationExpired, InvitationNotFound
from gateway.evaluations.prompts import LEVEL_BUTTONS, telegram_deep_link
from gateway.evaluations.reasons import BAD_LEVELS, LEVEL_WORDS
from gateway.evaluations.schemas import RatingIn
from gateway.evaluations.service import cases_of, invitation_by_token, record_rating
from gateway.fraud.signals import (
    DEVICE_COOKIE,
    DEVICE_COOKIE_MAX_AGE,
    new_device_id,
    record_signal,
    signals_for,
    valid_device_id,
)
from gateway.store.models import Invitation
from gateway.web.http import read_json, validation_error
from gateway.web.keys import DEPS, DISPATCHER, STORE
from gateway.web.templating import render

routes = web.RouteTableDef()


def _channel(via: str | None) -> str:
    return "qr" if via == "qr" else "web"


async def _context(request: web.Request, invitation: Invitation, *, case_no: str | None, via: str) -> dict[str, Any]:
    deps = request.app[DEPS]
    tz = ZoneInfo(deps.settings.timezone)
    async with request.app[STORE].transaction() as session:
        cases = await cases_of(session, invitation)
    rating_item = next((c.item_name for c in cases if c.case_no == case_no), None) if case_no else None
    theme_items = []
    if invitation.kind == "theme" and len(cases) > 1 and not case_no:
        theme_items = [
            {
                "item_name": c.item_name,
                "href": f"/r/{invitation.token}?item={c.case_no}" + ("&c=qr" if via == "qr" else ""),
            }
            for c in cases
        ]
    return {
        "item_name": invitation.item_name,
        "office_name": invitation.office_name,
        "completed_on": as_utc(invitation.completed_at).astimezone(tz).date().isoformat(),
        "expires_on": as_utc(invitation.expires_at).astimezone(tz).strftime("%Y-%m-%d %H:%M"),
        "items": cases,
        "kind": invitation.kind,
        "window": invitation.service_channel == "window",
        "levels": LEVEL_BUTTONS,
        "action": f"/r/{invitation.token}",
        "via": via,
        "case_no": case_no,
        "rating_item": rating_item,
        "theme_items": theme_items,
        "bot_link": telegram_deep_link(deps.settings.telegram_bot_username, invitation.token)
        if deps.settings.bot_enabled
        else None,
    }


def _closed_page(exc: EvaluationError) -> web.Response:
    if isinstance(exc, InvitationNotFound):
        return render("message.html", status=404, heading="链接无效", message="未找到该评价链接，请核对短信中的链接。")
    if isinstance(exc, InvitationExpired):
        return render(
            "message.html",
            status=410,
            heading="评价已过期",
            message="该服务的评价期（办结后7个工作日）已结束，感谢您的关注。",
        )
    if isinstance(exc, AlreadyRated):
        return render(
            "message.html",
            status=409,
            heading="已评价",
            message="该服务已评价过，每项服务只能评价一次。",
            extra="如对整改情况有意见，可等待回访或拨打12345热线。",
        )
    return render("message.html", status=exc.status, heading="无法提交", message=exc.message)


@routes.get("/r/{token}")
async def rating_page(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    via = "qr" if request.query.get("c") == "qr" else "link"
    try:
        async with request.app[STORE].transaction() as session:
            invitation = await invitation_by_token(session, request.match_info["token"])
    except InvitationNotFound as exc:
        return _closed_page(exc)
    if deps.clock.now() >= as_utc(invitation.expires_at):
        return _closed_page(InvitationExpired(""))
    if invitation.status == "rated":
        return _closed_page(AlreadyRated(""))
    case_no = request.query.get("item") or None
    signals = signals_for(deps.settings.effective_secret)
    response = render(
        "rate.html",
        opened=signals.opened_value(invitation.token, deps.clock.now()),
        **await _context(request, invitation, case_no=case_no, via=via),
    )
    _keep_device_cookie(request, response)
    return response


@routes.post("/r/{token}")
async def submit_rating(request: web.Request) -> web.StreamResponse:
    wants_json = request.content_type == "application/json"
    store, deps = request.app[STORE], request.app[DEPS]
    try:
        async with store.transaction() as session:
            invitation = await invitation_by_token(session, request.match_info["token"])
    except InvitationNotFound as exc:
        if wants_json:
            raise
        return _closed_page(exc)
    opened = ""
    if wants_json:
        rating = await read_json(request, RatingIn)
        via = request.query.get("c")
    else:
        form = await request.post()
        via = str(form.get("via") or "")
        opened = str(form.get("opened") or "")
        try:
            rating = RatingIn.model_validate(_form_to_rating(form))
        except ValidationError as exc:
            return render("message.html", status=422, heading="无法提交", message=validation_error(exc).message)
        if rating.level in BAD_LEVELS and not rating.reasons and not rating.text:
            # Art. 8: a bad rating needs content; ask for it before anything is recorded.
            return _reasons_page(request, invitation, rating, via=via, error=None, opened=opened)
    signals = signals_for(deps.settings.effective_secret)
    device_id = valid_device_id(request.cookies.get(DEVICE_COOKIE)) or new_device_id()
    try:
        async with store.transaction() as session:
            fresh = await invitation_by_token(session, invitation.token)
            rated = await record_rating(
                session,
                invitation=fresh,
                level=rating.level,
                channel=_channel(via),
                deps=deps,
                reasons=rating.reasons,
                text=rating.text,
                staff_level=rating.staff_level,
                case_no=rating.case_no,
            )
            # Art. 19: what fraud detection needs of a page rating, in the rating's transaction.
            await record_signal(
                session,
                evaluation_id=rated.evaluation.id,  # type: ignore[arg-type]
                signals=signals,
                address=_client_address(request),
                device_id=device_id,
                opened_at=signals.opened_at(invitation.token, opened),
                at=rated.evaluation.created_at,
            )
    except EvaluationError as exc:
        if wants_json:
            raise
        if exc.field in ("reasons", "text"):
            return _reasons_page(request, invitation, rating, via=via or "", error=exc.message, opened=opened)
        return _closed_page(exc)
    request.app[DISPATCHER].wake()
    response: web.Response
    if wants_json:
        response = web.json_response(
            {
                "evaluation_id": rated.evaluation.id,
                "level": rated.evaluation.level,
                "ticket_id": rated.ticket.id if rated.ticket else None,
            },
            status=201,
        )
    else:
        extra = "您的意见已转交相关部门办理，办理结果将回复给您。" if rated.ticket else None
        response = render(
            "message.html",
            status=201,
            heading="评价已提交",
            message=f"感谢您的评价：{LEVEL_WORDS[rating.level]}。",
            extra=extra,
        )
    _keep_device_cookie(request, response, device_id)
    return response


def _client_address(request: web.Request) -> str | None:
    """The client's address: the configured proxy header's first entry, else the peer (hashed before storing)."""
    header = request.app[DEPS].settings.fraud_client_address_header
    if header and request.headers.get(header):
        return request.headers[header].split(",", 1)[0].strip()[:64] or None
    return request.remote


def _keep_device_cookie(request: web.Request, response: web.StreamResponse, device_id: str | None = None) -> None:
    """A random device id in a first-party cookie: many ratings from one browser show (Art. 19)."""
    current = valid_device_id(request.cookies.get(DEVICE_COOKIE))
    value = current or device_id or new_device_id()
    if value != current:
        response.set_cookie(
            DEVICE_COOKIE,
            value,
            max_age=DEVICE_COOKIE_MAX_AGE,
            httponly=True,
            samesite="Lax",
            secure=request.app[DEPS].settings.public_url.startswith("https://"),
            path="/r/",
        )


def _form_to_rating(form: Any) -> dict[str, Any]:
    def number(value: Any) -> Any:
        text = str(value).strip()
        return int(text) if text.isascii() and text.isdigit() and len(text) < 6 else text

    data: dict[str, Any] = {
        "level": number(form.get("level", "")),
        "reasons": [number(v) for v in form.getall("reasons", [])],
    }
    if form.get("text"):
        data["text"] = str(form.get("text"))
    if form.get("staff_level"):
        data["staff_level"] = number(form.get("staff_level"))
    if form.get("case_no"):
        data["case_no"] = str(form.get("case_no"))
    return data


def _reasons_page(
    request: web.Request,
    invitation: Invitation,
    rating: RatingIn,
    *,
    via: str,
    error: str | None,
    opened: str = "",
) -> web.Response:
    deps = request.app[DEPS]
    return render(
        "reasons.html",
        status=200 if error is None else 422,
        level=rating.level,
        level_words=LEVEL_WORDS[rating.level],
        item_name=invitation.item_name,
        reasons=deps.catalogue.for_level(rating.level),
        selected=set(rating.reasons),
        text=rating.text,
        staff_level=rating.staff_level,
        case_no=rating.case_no,
        action=f"/r/{invitation.token}",
        via=via,
        error=error,
        opened=opened,
    )


@routes.get("/r/{token}/qr.{fmt:(png|svg)}")
async def rating_qr(request: web.Request) -> web.Response:
    """The link as a QR code for the window's screen (Art. 10); scans record the channel qr."""
    async with request.app[STORE].transaction() as session:
        try:
            invitation = await invitation_by_token(session, request.match_info["token"])
        except InvitationNotFound:
            raise web.HTTPNotFound() from None
    url = request.app[DEPS].rating_url(invitation.token) + "?c=qr"
    qr = segno.make(url, error="m")
    buffer = io.BytesIO()
    if request.match_info["fmt"] == "png":
        qr.save(buffer, kind="png", scale=8, border=2)
        return web.Response(body=buffer.getvalue(), content_type="image/png")
    qr.save(buffer, kind="svg", scale=8, border=2, xmldecl=False)
    return web.Response(body=buffer.getvalue(), content_type="image/svg+xml")
