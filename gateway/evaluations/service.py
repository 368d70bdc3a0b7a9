"""The evaluation rules: cases in, invitations, one rating per service (Art. 7, 8, 11)."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import bindparam, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.clock import as_utc
from gateway.deps import Deps
from gateway.errors import BrokenInvariant
from gateway.evaluations.errors import (
    AlreadyRated,
    CaseConflict,
    Forbidden,
    InvalidCase,
    InvalidRating,
    InvitationExpired,
    InvitationNotFound,
)
from gateway.evaluations.prompts import bot_prompt, sms_prompt, telegram_deep_link
from gateway.evaluations.reasons import BAD_LEVELS, UnknownReason
from gateway.evaluations.records import record_written
from gateway.evaluations.schemas import CaseIn
from gateway.messaging.outbox import enqueue, reachable_channel
from gateway.orgs import Caller, approval_org_for, city_of, is_above, is_city_level, org_by_code
from gateway.privacy import InvalidPhone, mask_phone, normalise_phone
from gateway.stats.rollup import stored_records
from gateway.store.models import (
    Citizen,
    Evaluation,
    EvaluationAddendum,
    Invitation,
    Organisation,
    OutboundMessage,
    ServiceCase,
    Ticket,
    TicketEvent,
)
from gateway.store.sets import in_set
from gateway.store.upsert import insert_rows
from gateway.tickets.service import BadRating, open_tickets

log = logging.getLogger(__name__)

# Art. 11: a citizen who did not rate at once may still rate within 7 working days.
RATING_WINDOW_WORKING_DAYS = 7
# Department clocks drift; a completion time this far in the future is still accepted.
CLOCK_SKEW = timedelta(minutes=10)


_TOKEN = re.compile(r"[A-Za-z0-9_-]{8,16}")


def new_token() -> str:
    """A short opaque link token: 72 random bits in 12 URL-safe characters."""
    return secrets.token_urlsafe(9)


@dataclass
class Intake:
    case: ServiceCase
    invitation: Invitation
    created: bool
    messages: list[OutboundMessage]


async def report_case(session: AsyncSession, *, caller: Caller, data: CaseIn, deps: Deps) -> Intake:
    """Record a finished case; create or join its invitation and queue the prompt, all in one transaction."""
    at = deps.clock.now()
    unit = await org_by_code(session, data.org_code)
    if unit is None:
        raise InvalidCase(f"org_code {data.org_code!r} is not a registered organisation", field="org_code")
    if not await is_above(session, caller, unit):
        raise Forbidden("this API key may not report cases for that organisation", field="org_code")
    if data.region_code != unit.region_code and not (
        is_city_level(unit.region_code) and city_of(data.region_code) == unit.region_code
    ):
        # The region decides which approval department gets the bad reviews (Art. 14): a unit reports
        # for its own region only.
        raise InvalidCase(
            f"region_code {data.region_code} is outside the region of {data.org_code} ({unit.region_code})",
            field="region_code",
        )
    if data.completed_at > at + CLOCK_SKEW:
        raise InvalidCase("completed_at is in the future", field="completed_at")
    if await approval_org_for(session, data.region_code) is None:
        raise InvalidCase(
            f"no approval department is registered for region {data.region_code}; bad reviews could not be routed",
            field="region_code",
        )
    request_hash = hash_request(data)
    if unit.id is None or caller.org_id is None:
        raise BrokenInvariant("unit.id, caller.org_id is missing")
    existing = (
        await session.exec(
            select(ServiceCase).where(ServiceCase.org_id == unit.id, ServiceCase.case_no == data.case_no)
        )
    ).first()
    if existing is not None:
        if existing.request_hash != request_hash:
            raise CaseConflict(
                f"case_no {data.case_no!r} was already reported with different content; cases are not edited",
                field="case_no",
            )
        invitation = await session.get(Invitation, existing.invitation_id)
        if invitation is None:
            raise BrokenInvariant("invitation is missing")
        return Intake(existing, invitation, False, await _messages_of(session, invitation))

    citizen = await _citizen_for(session, data, deps, at)
    invitation = await _invitation_for(session, data, unit.id, unit.name, citizen, deps, at)
    case = ServiceCase(
        org_id=unit.id,
        reporter_org_id=caller.org_id,
        case_no=data.case_no,
        item_code=data.item_code,
        item_name=data.item_name,
        region_code=data.region_code,
        staff_id=data.staff_id,
        service_channel=data.service_channel,
        completed_at=data.completed_at,
        batch_no=data.batch_no,
        theme_no=data.theme_no,
        invitation_id=invitation.id,  # type: ignore[arg-type]
        request_hash=request_hash,
        created_at=at,
    )
    session.add(case)
    await session.flush()
    if invitation.status == "open" and citizen is not None and as_utc(invitation.expires_at) > at:
        await _queue_prompt(session, invitation, citizen, deps, at)
    return Intake(case, invitation, True, await _messages_of(session, invitation))


def hash_request(data: CaseIn) -> str:
    """The fingerprint of a report: the same case number reported again must carry the same content."""
    payload = data.model_dump(mode="json")
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


async def _citizen_for(session: AsyncSession, data: CaseIn, deps: Deps, at: datetime) -> Citizen | None:
    phone = None
    if data.citizen.phone:
        try:
            phone = normalise_phone(data.citizen.phone)
        except InvalidPhone as exc:
            raise InvalidCase(str(exc), field="citizen.phone") from None
    chat_id = data.citizen.telegram_chat_id
    if phone is None and chat_id is None:
        return None
    citizen = None
    phone_hash = deps.vault.lookup_hash(phone) if phone else None
    if phone_hash:
        citizen = (await session.exec(select(Citizen).where(Citizen.phone_hash == phone_hash))).first()
    if citizen is None and chat_id is not None:
        citizen = (await session.exec(select(Citizen).where(Citizen.telegram_chat_id == chat_id))).first()
    if citizen is None:
        citizen = Citizen(created_at=at)
        session.add(citizen)
    if phone and citizen.phone_hash is None:
        citizen.phone_hash, citizen.phone_enc = phone_hash, deps.vault.encrypt(phone)
        citizen.phone_masked = mask_phone(phone)
    if chat_id is not None and citizen.telegram_chat_id is None:
        taken = (await session.exec(select(Citizen.id).where(Citizen.telegram_chat_id == chat_id))).first()
        if taken is None:
            citizen.telegram_chat_id = chat_id
    if data.citizen.name and citizen.name_enc is None:
        citizen.name_enc = deps.vault.encrypt(data.citizen.name)
    await session.flush()
    return citizen


async def _invitation_for(
    session: AsyncSession, data: CaseIn, unit_id: int, unit_name: str, citizen: Citizen | None, deps: Deps, at: datetime
) -> Invitation:
    kind, group_no = (
        ("batch", data.batch_no)
        if data.batch_no
        else ("theme", data.theme_no)
        if data.theme_no
        else ("single", data.case_no)
    )
    if group_no is None:
        raise BrokenInvariant("group_no is missing")
    # A batch is one unit's; a theme ("一件事", Art. 11) spans units, so its one invitation belongs to the
    # approval department of the region, which coordinates the theme and dispatches its bad reviews (Art. 14).
    owner_id = unit_id
    if kind == "theme":
        approval = await approval_org_for(session, data.region_code)
        if approval is None or approval.id is None:
            raise InvalidCase(
                f"no approval department is registered for region {data.region_code}", field="region_code"
            )
        owner_id = approval.id
    expires = deps.calendar.due_at(data.completed_at, RATING_WINDOW_WORKING_DAYS)
    if kind != "single":
        found = (
            await session.exec(
                select(Invitation).where(
                    Invitation.org_id == owner_id, Invitation.kind == kind, Invitation.group_no == group_no
                )
            )
        ).first()
        if found is not None:
            linked = await cases_of(session, found)
            if kind == "batch":
                if linked and linked[0].item_code != data.item_code:
                    raise InvalidCase(
                        "a batch (Art. 11) holds cases of one service item; this item_code differs", field="item_code"
                    )
            elif any(c.case_no == data.case_no for c in linked):
                # An item of a theme is chosen by its case number: two units' equal numbers would be ambiguous.
                raise CaseConflict(
                    f"case_no {data.case_no!r} is already an item of theme {group_no!r} (reported by another unit)",
                    field="case_no",
                )
            if citizen is not None and found.citizen_id not in (None, citizen.id):
                raise InvalidCase("a batch or theme belongs to one citizen; this citizen differs", field="citizen")
            # The supplementary rating window runs from the latest completion in the group.
            if as_utc(found.expires_at) < expires.at:
                found.expires_at, found.expires_provisional = expires.at, expires.provisional
            if found.citizen_id is None and citizen is not None:
                found.citizen_id = citizen.id
            return found
    invitation = Invitation(
        token=new_token(),
        org_id=owner_id,
        citizen_id=citizen.id if citizen else None,
        kind=kind,
        group_no=group_no,
        region_code=data.region_code,
        item_name=data.item_name,
        office_name=data.office_name or unit_name,
        service_channel=data.service_channel,
        completed_at=data.completed_at,
        expires_at=expires.at,
        expires_provisional=expires.provisional,
        created_at=at,
    )
    session.add(invitation)
    await session.flush()
    from gateway.stats.rollup import invitation_created

    await invitation_created(
        session, invitation=invitation, item_code=data.item_code, staff_id=data.staff_id, tz=deps.calendar.tz
    )
    return invitation


async def may_rate_for(session: AsyncSession, caller: Caller, invitation: Invitation) -> bool:
    """Whether a department key may record a rating of this invitation on the citizen's behalf.

    The key must be allowed to report for the invitation's owner or, for a theme, for one of its units.
    """
    owners = {invitation.org_id} | {c.org_id for c in await cases_of(session, invitation)}
    for org_id in sorted(owners):
        org = await session.get(Organisation, org_id)
        if org is not None and await is_above(session, caller, org):
            return True
    return False


async def _queue_prompt(
    session: AsyncSession, invitation: Invitation, citizen: Citizen, deps: Deps, at: datetime
) -> None:
    channel = reachable_channel(citizen, bot_enabled=deps.settings.bot_enabled)
    if channel is None:
        return
    tz = deps.settings.timezone
    buttons = None
    if channel == "telegram":
        if invitation.id is None:
            raise BrokenInvariant("invitation.id is missing")
        body, buttons = bot_prompt(
            invitation_id=invitation.id,
            item_name=invitation.item_name,
            office_name=invitation.office_name,
            completed_at=invitation.completed_at,
            tz=tz,
        )
    else:
        body = sms_prompt(
            signature=deps.settings.sms_signature,
            item_name=invitation.item_name,
            completed_at=invitation.completed_at,
            tz=tz,
            link=deps.rating_url(invitation.token),
            bot_link=telegram_deep_link(deps.settings.telegram_bot_username, invitation.token)
            if deps.settings.bot_enabled
            else None,
        )
    await enqueue(
        session,
        channel=channel,
        citizen=citizen,
        purpose="prompt",
        body=body,
        buttons=buttons,
        at=at,
        quiet=deps.quiet,
        dedupe_key=f"prompt:{invitation.id}",
        invitation_id=invitation.id,
    )


async def _messages_of(session: AsyncSession, invitation: Invitation) -> list[OutboundMessage]:
    rows = await session.exec(
        select(OutboundMessage).where(
            OutboundMessage.invitation_id == invitation.id, OutboundMessage.purpose == "prompt"
        )
    )
    return list(rows.all())


async def invitation_by_token(session: AsyncSession, token: str) -> Invitation:
    if not _TOKEN.fullmatch(token):
        raise InvitationNotFound("no such rating link")
    invitation = (await session.exec(select(Invitation).where(Invitation.token == token))).first()
    if invitation is None:
        raise InvitationNotFound("no such rating link")
    return invitation


# Statements of every rating, built once and executed with bound values (building them per rating cost
# more CPU than running them).
_CASES_OF = select(ServiceCase).where(ServiceCase.invitation_id == bindparam("i")).order_by(col(ServiceCase.id))
_INVITATIONS = Invitation.__table__  # type: ignore[attr-defined]  # a Core UPDATE: no ORM bulk-update bookkeeping
# (allowed statuses, new status) by what is rated: the service as a whole, or one item of a theme.
_CLAIMED = {True: (("open",), "rated"), False: (("open", "partly_rated"), "partly_rated")}
_CLAIM = {
    whole: update(_INVITATIONS)
    .where(_INVITATIONS.c.id == bindparam("i"), _INVITATIONS.c.status.in_(allowed))
    .values(status=new_status, rated_at=bindparam("at"))
    for whole, (allowed, new_status) in _CLAIMED.items()
}
# A group's ratings (`RatingGroup`, whole services): the invitations that could move, the ids of those that did.
_CLAIM_MANY = (
    update(_INVITATIONS)
    .where(in_set(_INVITATIONS.c.id, "ids"), _INVITATIONS.c.status.in_(_CLAIMED[True][0]))
    .values(status=_CLAIMED[True][1], rated_at=bindparam("at"))
    .returning(_INVITATIONS.c.id)
)


async def cases_of(session: AsyncSession, invitation: Invitation) -> list[ServiceCase]:
    rows = await session.exec(_CASES_OF, params={"i": invitation.id})
    return list(rows.all())


@dataclass
class Rated:
    evaluation: Evaluation
    ticket: Ticket | None


async def record_rating(
    session: AsyncSession,
    *,
    invitation: Invitation,
    level: int,
    channel: str,
    deps: Deps,
    reasons: list[int] | None = None,
    text: str = "",
    staff_level: int | None = None,
    case_no: str | None = None,
    submitted_by_org_id: int | None = None,
    require_content: bool = True,
    cases: list[ServiceCase] | None = None,
) -> Rated:
    """Record the one rating of a service and, for a bad one, open its ticket in the same transaction.

    `require_content=False` is for conversations, which record the level at once and ask for the
    reasons next (the rating is never lost while waiting); the page and the API require them (Art. 8).
    `cases`: the invitation's cases when the caller has read them already (in this transaction).
    """
    at = deps.clock.now()
    if cases is None:
        cases = await cases_of(session, invitation)
    evaluation, case = _checked_rating(
        invitation=invitation,
        level=level,
        channel=channel,
        deps=deps,
        at=at,
        reasons=reasons,
        text=text,
        staff_level=staff_level,
        case_no=case_no,
        submitted_by_org_id=submitted_by_org_id,
        require_content=require_content,
        cases=cases,
    )
    await _claim(session, invitation, scope=evaluation.scope, item_count=len(cases), at=at)
    session.add(evaluation)
    if evaluation.scope == "all":
        await session.flush()  # the claim above already made this the only rating of the service
    else:
        try:
            async with session.begin_nested():
                await session.flush()
        except IntegrityError:
            raise AlreadyRated("this item has already been rated; each service is rated once (Art. 11)") from None
    (rated,) = await _after_ratings(session, [(evaluation, invitation, [case] if case else cases)], deps=deps, at=at)
    return rated


@dataclass
class PendingRating:
    """A rating of a whole service, checked and built, waiting to be written with others (`RatingGroup`)."""

    evaluation: Evaluation
    invitation: Invitation
    cases: list[ServiceCase]


@dataclass
class RatingGroup:
    """Ratings of several services made in one transaction at one moment (a group of conversations),
    written together by `write`: one UPDATE claims every invitation and one INSERT stores every
    evaluation, where `record_rating` spends one of each per rating. Each rating is checked as
    `record_rating` checks it when it is added; what follows a rating (the evaluation log, the roll-ups,
    the upload record, the ticket of a bad one) is the same, the group's tickets opened together. The
    reasons the group's conversations attach to earlier ratings (`reasons`) are written after them."""

    at: datetime
    pending: list[PendingRating] = field(default_factory=list)
    reasons: ReasonsGroup = field(default_factory=lambda: ReasonsGroup())

    def add(self, *, invitation: Invitation, level: int, channel: str, deps: Deps, cases: list[ServiceCase]) -> None:
        """A conversation's rating (the level alone: its reasons are asked next)."""
        evaluation, _ = _checked_rating(
            invitation=invitation,
            level=level,
            channel=channel,
            deps=deps,
            at=self.at,
            require_content=False,
            cases=cases,
        )
        self.pending.append(PendingRating(evaluation, invitation, cases))

    async def write(self, session: AsyncSession, deps: Deps) -> list[Rated]:
        """Claim and store the group's ratings, then its reasons; AlreadyRated (and nothing claimed once
        the transaction rolls back) when any rating's service was rated meanwhile, so that each can go
        `record_rating`'s way."""
        rated = await self._write_ratings(session, deps)
        await self.reasons.write(session, deps)
        return rated

    async def _write_ratings(self, session: AsyncSession, deps: Deps) -> list[Rated]:
        if not self.pending:
            return []
        ids = [p.invitation.id for p in self.pending]
        claimed = set((await session.exec(_CLAIM_MANY, params={"ids": ids, "at": self.at})).scalars().all())
        if len(claimed) != len(ids):
            raise AlreadyRated("this service has already been rated; each service is rated once (Art. 11)")
        for p in self.pending:
            set_committed_value(p.invitation, "status", _CLAIMED[True][1])
            set_committed_value(p.invitation, "rated_at", self.at)
        session.add_all([p.evaluation for p in self.pending])
        await session.flush()  # one INSERT for the group's evaluations
        return await _after_ratings(
            session, [(p.evaluation, p.invitation, p.cases) for p in self.pending], deps=deps, at=self.at
        )


@dataclass
class PendingReasons:
    """Reasons given after a rating, checked, waiting to be written with others (`ReasonsGroup`)."""

    evaluation: Evaluation
    codes: list[int]
    text: str
    channel: str
    at: datetime  # when they were given: after a rating recorded in the same step, never before it


@dataclass
class ReasonsGroup:
    """Reasons attached to several ratings in one transaction, written together by `write`: one INSERT
    stores the addenda, the evaluations' stored addenda and rulings (for the roll-ups) and their tickets
    are read by one query each, and the tickets' events are stored by one INSERT. Each evaluation at
    most once in a group."""

    pending: list[PendingReasons] = field(default_factory=list)

    def add(self, *, evaluation: Evaluation, codes: list[int], text: str, channel: str, deps: Deps) -> None:
        try:
            checked = deps.catalogue.check(evaluation.level, codes)
        except UnknownReason as exc:
            raise InvalidRating(str(exc), field="reasons") from None
        if any(p.evaluation is evaluation for p in self.pending):
            raise BrokenInvariant("an evaluation's reasons are added once per group")
        self.pending.append(PendingReasons(evaluation, checked, text, channel, deps.clock.now()))

    async def write(self, session: AsyncSession, deps: Deps) -> list[EvaluationAddendum]:
        """Store the addenda and carry the reasons to the tickets (see `add_reasons`)."""
        if not self.pending:
            return []
        addenda = [
            EvaluationAddendum(
                evaluation_id=p.evaluation.id,  # type: ignore[arg-type]
                kind="reasons",
                reason_codes=p.codes,
                content=p.text.strip()[:1000],
                channel=p.channel,
                created_at=p.at,
            )
            for p in self.pending
        ]
        session.add_all(addenda)
        await session.flush()  # one INSERT for the group's addenda
        ids = [a.evaluation_id for a in addenda]
        stored = await stored_records(session, ids)  # what the roll-ups read, for the whole group
        for addendum in addenda:
            await record_written(
                session,
                kind="addendum",
                record=addendum,
                deps=deps,
                at=addendum.created_at,
                stored=stored[addendum.evaluation_id],
            )
        tickets = {t.evaluation_id: t for t in (await session.exec(_TICKETS_OF, params={"ids": ids})).all()}
        if tickets:
            from gateway.tickets.service import note_reasons

            events = [
                await note_reasons(session, ticket=ticket, codes=p.codes, text=p.text, deps=deps, at=p.at)
                for p in self.pending
                if (ticket := tickets.get(p.evaluation.id)) is not None  # type: ignore[arg-type]
            ]
            await insert_rows(session, TicketEvent, events)  # one INSERT for the tickets' events
            await session.flush()  # the tickets' changes
        return addenda


_TICKETS_OF = select(Ticket).where(in_set(col(Ticket.evaluation_id), "ids"))


def _checked_rating(
    *,
    invitation: Invitation,
    level: int,
    channel: str,
    deps: Deps,
    at: datetime,
    cases: list[ServiceCase],
    reasons: list[int] | None = None,
    text: str = "",
    staff_level: int | None = None,
    case_no: str | None = None,
    submitted_by_org_id: int | None = None,
    require_content: bool = True,
) -> tuple[Evaluation, ServiceCase | None]:
    """The rating's checks (level, period, reasons, staff rating, the theme's item) and its evaluation,
    not yet stored; with the case rated when an item of a theme is."""
    if level not in (1, 2, 3, 4, 5):
        raise InvalidRating("level must be 1 (非常不满意) to 5 (非常满意)", field="level")
    if at >= as_utc(invitation.expires_at):
        raise InvitationExpired("the rating period of 7 working days has ended (Art. 11)")
    try:
        codes = deps.catalogue.check(level, reasons or [])
    except UnknownReason as exc:
        raise InvalidRating(str(exc), field="reasons") from None
    if level in BAD_LEVELS and require_content and not codes and not text.strip():
        raise InvalidRating("a bad rating needs at least one reason or a few words (Art. 8)", field="reasons")
    if staff_level is not None and invitation.service_channel != "window":
        raise InvalidRating("only window services rate the staff member (Art. 7)", field="staff_level")
    scope, case = "all", None
    if case_no is not None:
        if invitation.kind != "theme":
            raise InvalidRating("case_no selects an item of a theme; this service is rated as a whole", field="case_no")
        case = next((c for c in cases if c.case_no == case_no), None)
        if case is None:
            raise InvalidRating(f"case_no {case_no!r} is not part of this theme", field="case_no")
        scope = f"case:{case.id}"
    evaluation = Evaluation(
        invitation_id=invitation.id,  # type: ignore[arg-type]
        case_id=case.id if case else (cases[0].id if len(cases) == 1 else None),
        scope=scope,
        citizen_id=invitation.citizen_id,
        level=level,
        reason_codes=codes,
        content=text.strip(),
        staff_id=(case or (cases[0] if cases else None)).staff_id if cases else None,  # type: ignore[union-attr]
        staff_level=staff_level,
        channel=channel,
        submitted_by_org_id=submitted_by_org_id,
        created_at=at,
    )
    return evaluation, case


async def _after_ratings(
    session: AsyncSession,
    stored: Sequence[tuple[Evaluation, Invitation, list[ServiceCase]]],
    *,
    deps: Deps,
    at: datetime,
) -> list[Rated]:
    """What follows stored evaluations in their transaction: their records, and the tickets of bad ones
    (opened together). Each item: the evaluation, its invitation and the cases it rates."""
    for evaluation, _, _ in stored:
        await record_written(session, kind="evaluation", record=evaluation, deps=deps, at=at)
    bad = [BadRating(e, i, cases) for e, i, cases in stored if e.level in BAD_LEVELS]
    tickets = {t.evaluation_id: t for t in await open_tickets(session, bad, deps=deps)} if bad else {}
    for evaluation, _, _ in stored:
        log.info(
            "evaluation recorded",
            extra={"evaluation_id": evaluation.id, "level": evaluation.level, "channel": evaluation.channel},
        )
    return [Rated(evaluation, tickets.get(evaluation.id)) for evaluation, _, _ in stored]  # type: ignore[arg-type]


async def _claim(session: AsyncSession, invitation: Invitation, *, scope: str, item_count: int, at: datetime) -> None:
    # The conditional UPDATE is the race guard: of many concurrent ratings exactly one moves the row.
    # Rating a theme as a whole excludes rating its items one by one, and the other way round (Art. 11).
    new_status = _CLAIMED[scope == "all"][1]
    result = await session.exec(_CLAIM[scope == "all"], params={"i": invitation.id, "at": at})
    if result.rowcount != 1:
        raise AlreadyRated("this service has already been rated; each service is rated once (Art. 11)")
    # The row already holds these values: mirror them without another UPDATE at flush.
    set_committed_value(invitation, "status", new_status)
    set_committed_value(invitation, "rated_at", at)
    if scope != "all":
        rated_items = len(
            (await session.exec(select(Evaluation.id).where(Evaluation.invitation_id == invitation.id))).all()
        )
        if rated_items + 1 >= item_count:
            invitation.status = "rated"


async def add_reasons(
    session: AsyncSession, *, evaluation: Evaluation, codes: list[int], text: str, channel: str, deps: Deps
) -> EvaluationAddendum:
    """Attach reasons given after the rating (the conversation's follow-up) and carry them to the ticket."""
    group = ReasonsGroup()
    group.add(evaluation=evaluation, codes=codes, text=text, channel=channel, deps=deps)
    (addendum,) = await group.write(session, deps)
    return addendum


async def add_staff_rating(
    session: AsyncSession, *, evaluation: Evaluation, staff_level: int, channel: str, deps: Deps
) -> EvaluationAddendum:
    """Record the optional staff rating of a window service (Art. 7), given after the main rating."""
    if not 1 <= staff_level <= 5:
        raise InvalidRating("staff_level must be 1 to 5", field="staff_level")
    addendum = EvaluationAddendum(
        evaluation_id=evaluation.id,  # type: ignore[arg-type]
        kind="staff",
        staff_level=staff_level,
        channel=channel,
        created_at=deps.clock.now(),
    )
    session.add(addendum)
    await session.flush()
    await record_written(session, kind="addendum", record=addendum, deps=deps, at=addendum.created_at)
    return addendum
