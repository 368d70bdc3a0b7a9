"""Twilio webhooks: inbound SMS and delivery status. Both verify X-Twilio-Signature before reading
anything else (STYLE 6), against GATEWAY_PUBLIC_URL + path, and answer fast: replies go out through
the outbox, never in the webhook's answer."""

from __future__ import annotations

import logging

from aiohttp import web
from multidict import MultiDictProxy
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from conversations import Inbound
from gateway.deps import Deps
from gateway.dialogue import converse
from gateway.privacy import InvalidPhone, mask_phone, normalise_phone
from gateway.sms.signature import verify_twilio_signature
from gateway.sms.twilio_provider import classify_delivery_error
from gateway.store.models import Citizen, DeliveryAttempt, OutboundMessage
from gateway.store.db import Store
from gateway.web.keys import DEPS, DISPATCHER, RUNNER, SETTINGS, STORE

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'

# A status only moves forward: Twilio's callbacks can arrive out of order.
_RANK = {"queued": 1, "accepted": 1, "sending": 2, "sent": 3, "delivered": 4, "read": 4, "undelivered": 4, "failed": 4}


async def signed_form(request: web.Request) -> MultiDictProxy[str]:
    """The posted form, once the signature over it has been verified; 403 otherwise."""
    settings = request.app[SETTINGS]
    url = settings.public_url + request.path_qs
    form = await request.post()
    params = MultiDictProxy(form)  # type: ignore[arg-type]
    ok = verify_twilio_signature(
        settings.twilio_auth_token.get_secret_value(), url, params, request.headers.get("X-Twilio-Signature")
    )
    if not ok:
        log.warning("twilio webhook with a missing or wrong signature refused", extra={"path": request.path})
        raise web.HTTPForbidden(text="invalid signature")
    return params  # type: ignore[return-value]


def twiml() -> web.Response:
    return web.Response(text=EMPTY_TWIML, content_type="text/xml")


@routes.post("/webhooks/twilio/status")
async def delivery_status(request: web.Request) -> web.Response:
    form = await signed_form(request)
    sid, status = str(form.get("MessageSid", ""))[:64], str(form.get("MessageStatus", "")).lower()
    if not sid or status not in _RANK:
        return web.Response(status=400, text="MessageSid and a known MessageStatus are required")
    code = str(form.get("ErrorCode", "") or "")[:32] or None
    now = request.app[DEPS].clock.now()
    async with request.app[STORE].transaction() as session:
        message = (await session.exec(select(OutboundMessage).where(OutboundMessage.provider_message_id == sid))).first()
        if message is None:
            return web.Response(status=204)  # not ours, or long gone: nothing to do, nothing to retry
        if _RANK.get(status, 0) <= _RANK.get(message.status, 0) or message.status in ("failed", "suppressed", "cancelled"):
            return web.Response(status=204)
        message.status, message.updated_at = ("delivered" if status == "read" else status), now
        if code:
            kind = classify_delivery_error(code)
            message.error_code, message.last_error = code, kind.reason
            if kind.opt_out:
                citizen = await session.get(Citizen, message.citizen_id)
                if citizen is not None and citizen.sms_opted_out_at is None:
                    citizen.sms_opted_out_at = now
        session.add(DeliveryAttempt(message_id=message.id, at=now, outcome=status, error_code=code,  # type: ignore[arg-type]
                                    detail="delivery status callback"))
    return web.Response(status=204)




# Twilio's Advanced Opt-Out reports what it did with a keyword; its own confirmation has been sent.
_OPT_OUT_TYPES = {"STOP": "opt_out", "START": "opt_in"}


@routes.post("/webhooks/twilio/sms")
async def inbound_sms(request: web.Request) -> web.Response:
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
    runner = request.app[RUNNER]
    phone_hash = deps.vault.lookup_hash(phone)
    citizen_id = runner.citizen_ids.get(phone_hash)
    if citizen_id is None:
        citizen_id = await citizen_for_phone(request.app[STORE], deps, phone)
        runner.remember(phone_hash, citizen_id)
    outcome = await converse(
        runner, channel="sms", citizen_id=citizen_id, provider="twilio", provider_id=sid,
        inbound=Inbound(kind="text", at=deps.clock.now(), text=text),
    )
    if outcome.replies:
        request.app[DISPATCHER].wake()
    return twiml()


async def citizen_for_phone(store: Store, deps: Deps, phone: str) -> int:
    """The citizen behind a number, created on first contact (needed to answer through the outbox)."""
    phone_hash = deps.vault.lookup_hash(phone)
    for _ in range(2):
        async with store.transaction() as session:
            found = (await session.exec(select(Citizen.id).where(Citizen.phone_hash == phone_hash))).first()
            if found is not None:
                return found
            try:
                citizen = Citizen(phone_hash=phone_hash, phone_enc=deps.vault.encrypt(phone), phone_masked=mask_phone(phone),
                                  created_at=deps.clock.now())
                async with session.begin_nested():
                    session.add(citizen)
                    await session.flush()
                assert citizen.id is not None
                return citizen.id
            except IntegrityError:
                continue  # created by a concurrent message from the same number: read it
    raise RuntimeError("could not resolve the sender")
