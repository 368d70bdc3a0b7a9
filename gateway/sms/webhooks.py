"""Twilio webhooks: inbound SMS and delivery status. Both verify X-Twilio-Signature before reading
anything else (STYLE 6), against GATEWAY_PUBLIC_URL + path, and answer fast: replies go out through
the outbox, never in the webhook's answer."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import cast

from aiohttp import web
from multidict import MultiDictProxy
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from conversations.parsing import keyword
from gateway.messaging.outbox import STATUS_RANK, record_delivery_report, record_opt_out
from gateway.privacy import InvalidPhone, normalise_phone
from gateway.sms.inbox import Arrival, InboxUnavailable, storable_text
from gateway.sms.signature import verify_twilio_signature
from gateway.sms.twilio_provider import classify_delivery_error
from gateway.store.db import Store
from gateway.store.models import Citizen, OutboundMessage
from gateway.web.keys import DEPS, INBOX, INBOX_WRITER, SETTINGS, STORE

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


async def signed_form(request: web.Request) -> MultiDictProxy[str]:
    """The posted form, once the signature over it has been verified; 403 otherwise."""
    settings = request.app[SETTINGS]
    url = settings.public_url + request.path_qs
    form = await request.post()
    params = MultiDictProxy(form)
    ok = verify_twilio_signature(
        settings.twilio_auth_token.get_secret_value(),
        url,
        cast(Mapping[str, str], params),
        request.headers.get("X-Twilio-Signature"),
    )
    if not ok:
        log.warning("twilio webhook with a missing or wrong signature refused", extra={"path": request.path})
        raise web.HTTPForbidden(text="invalid signature")
    return params  # type: ignore[return-value]


def twiml() -> web.Response:
    return web.Response(text=EMPTY_TWIML, content_type="text/xml")


@routes.post("/webhooks/twilio/status")
async def delivery_status(request: web.Request) -> web.Response:
    """A message's delivery status. The callback URL carries the message's id (`?m=`), so a callback
    that arrives before the dispatcher has recorded Twilio's answer to the send still finds it; the
    MessageSid is the fallback, and a status only moves forward."""
    form = await signed_form(request)
    sid, status = str(form.get("MessageSid", ""))[:64], str(form.get("MessageStatus", "")).lower()
    if not sid or status not in STATUS_RANK:
        return web.Response(status=400, text="MessageSid and a known MessageStatus are required")
    code = str(form.get("ErrorCode", "") or "")[:32] or None
    now = request.app[DEPS].clock.now()
    async with request.app[STORE].transaction() as session:
        message = await _callback_message(session, request.query.get("m", ""), sid)
        if message is None:
            return web.Response(status=204)  # not ours, or long gone: nothing to do, nothing to retry
        kind = classify_delivery_error(code) if code else None
        await record_delivery_report(
            session,
            message,
            reported=_AS_OUTBOX_STATUS.get(status, status),
            outcome=status,
            provider_id=sid,
            error_code=code,
            error_reason=kind.reason if kind else None,
            opt_out=bool(kind and kind.opt_out),
            detail="delivery status callback",
            at=now,
        )
    return web.Response(status=204)


# Twilio's states before "sent" all mean that Twilio has the message: for the outbox it is sent (and
# a retry waiting in "queued" must not go out again). "read" is as good as delivered.
_AS_OUTBOX_STATUS = {"queued": "sent", "accepted": "sent", "scheduled": "sent", "sending": "sent", "read": "delivered"}


async def _callback_message(session: AsyncSession, message_id: str, sid: str) -> OutboundMessage | None:
    """The message a callback is about, locked (the dispatcher may be recording its send right now)."""
    if message_id.isdigit() and len(message_id) < 19:
        message = await session.get(OutboundMessage, int(message_id), with_for_update=True)
        # Another SMS's id with this SID would be a forged or misrouted callback: ignore it.
        if message is not None and message.channel == "sms" and message.provider_message_id in (None, sid):
            return message
        return None
    return (
        await session.exec(select(OutboundMessage).where(OutboundMessage.provider_message_id == sid).with_for_update())
    ).first()


# Twilio's Advanced Opt-Out reports what it did with a keyword; its own confirmation has been sent.
_OPT_OUT_TYPES = {"STOP": "opt_out", "START": "opt_in"}


@routes.post("/webhooks/twilio/sms")
async def inbound_sms(request: web.Request) -> web.Response:
    """Store the reply in the inbox and answer; the drainer processes it (gateway.sms.inbox)."""
    form = await signed_form(request)  # nothing is read or recorded before this passes
    sid = str(form.get("MessageSid") or form.get("SmsMessageSid") or "")[:64]
    sender = str(form.get("From", ""))
    if not sid or not sender:
        return web.Response(status=400, text="MessageSid and From are required")
    deps = request.app[DEPS]
    try:
        phone = normalise_phone(sender)
    except InvalidPhone:
        log.info("inbound SMS from an unusable sender ignored", extra={"message_sid": sid})
        return twiml()
    body = str(form.get("Body", ""))
    opt_type = _OPT_OUT_TYPES.get(str(form.get("OptOutType", "")).upper())
    text = {"opt_out": "STOP", "opt_in": "START"}.get(opt_type or "", body)
    arrival = Arrival(
        provider_id=sid,
        sender_hash=deps.vault.lookup_hash(phone),
        sender_enc=deps.vault.encrypt(phone),
        body=storable_text(text),
        received_at=deps.clock.now(),
    )
    try:
        new = await request.app[INBOX_WRITER].accept(arrival)
        if keyword(text) == "opt_out":
            # At once, not in its turn: nothing may go to the number from now on, even while earlier
            # messages wait or fail. The conversation records it again (harmlessly) when it comes.
            await opt_out_now(request.app[STORE], arrival.sender_hash, arrival.received_at)
    except InboxUnavailable:
        return web.Response(status=503, text="the message could not be stored")
    if new:
        request.app[INBOX].wake()
    return twiml()


async def opt_out_now(store: Store, sender_hash: str, at: datetime) -> None:
    try:
        async with store.transaction() as session:
            citizen = (await session.exec(select(Citizen).where(col(Citizen.phone_hash) == sender_hash))).first()
            if citizen is not None:
                record_opt_out(citizen, channel="sms", at=at)
    except Exception:
        log.exception("opt-out could not be recorded at once; the inbox will record it")
