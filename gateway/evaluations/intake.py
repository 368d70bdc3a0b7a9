"""Cases in, many at a time: the rules of `report_case`, applied set-based over a list of cases.

A department's nightly report carries hundreds of cases. Each case is checked on its own (a bad one is
answered with its error and never holds back the others), and the cases that pass are written with a
few statements for the whole list: the organisations, the earlier reports of the same case numbers and
the citizens are read once each, and the citizens, invitations, cases, statistics and prompts are
inserted with one statement each. Everything commits in the caller's one transaction.

Cases of a batch or a theme, and cases naming a Telegram chat, join rows that other cases of the list
may also join; they go through `report_case` one at a time, each inside a savepoint of the same
transaction, after the plain cases.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Result, Select, insert, or_, text, update
from sqlalchemy import select as sql_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.clock import as_utc
from gateway.deps import Deps
from gateway.errors import BrokenInvariant, DomainError
from gateway.evaluations import service
from gateway.evaluations.errors import CaseConflict, Forbidden, InvalidCase
from gateway.evaluations.prompts import bot_prompt, sms_prompt, telegram_deep_link
from gateway.evaluations.schemas import CaseIn
from gateway.messaging.outbox import PRIORITY_BULK
from gateway.orgs import Caller, city_of, is_above, is_city_level
from gateway.privacy import InvalidPhone, mask_phone, normalise_phone
from gateway.store.chain import Part, chained_insert
from gateway.store.db import Store, autocommits, fetch_rows
from gateway.store.group_commit import GroupCommit
from gateway.store.models import Citizen, Invitation, Organisation, OutboundMessage, ServiceCase
from gateway.store.sets import in_set
from gateway.store.upsert import insert_rows


@dataclass(frozen=True)
class InvitationView:
    """What an answer tells of an invitation."""

    token: str
    expires_at: datetime
    expires_provisional: bool
    kind: str
    status: str

    @classmethod
    def of(cls, invitation: Invitation) -> InvitationView:
        return cls(
            token=invitation.token,
            expires_at=as_utc(invitation.expires_at),
            expires_provisional=invitation.expires_provisional,
            kind=invitation.kind,
            status=invitation.status,
        )


@dataclass(frozen=True)
class MessageView:
    """A queued prompt as an answer shows it."""

    id: int
    channel: str
    status: str
    not_before: datetime | None

    @classmethod
    def of(cls, message: OutboundMessage) -> MessageView:
        if message.id is None:
            raise BrokenInvariant("message.id is missing")
        return cls(
            id=message.id,
            channel=message.channel,
            status=message.status,
            not_before=as_utc(message.not_before) if message.not_before else None,
        )


@dataclass(frozen=True)
class CaseAnswer:
    """One case's answer: its id, whether this report created it, its invitation and its prompts."""

    case_id: int
    created: bool
    invitation: InvitationView
    messages: list[MessageView]


Outcome = CaseAnswer | DomainError


def is_plain(data: CaseIn) -> bool:
    """A case of its own (no batch, no theme) whose citizen is known by phone at most: set-based."""
    return not data.batch_no and not data.theme_no and data.citizen.telegram_chat_id is None


class _Org(NamedTuple):
    """An organisation as the checks and rows of a report read it."""

    id: int
    code: str
    name: str
    kind: str
    region_code: str
    parent_id: int | None


Report = tuple[int, CaseIn, Caller]  # a case of a request: its position, its content, the key that sent it


@dataclass
class _Item:
    index: int
    data: CaseIn
    caller: Caller
    unit: _Org | None = None
    hash: str = ""
    phone: str | None = None
    phone_hash: str | None = None
    citizen_id: int | None = None
    answer: Outcome | None = None
    twin_of: int | None = None  # an earlier item of the same list with the same (org, case_no)


@dataclass
class _CitizenRow:
    id: int
    phone_enc: str | None
    sms_opted_out_at: datetime | None
    telegram_chat_id: int | None
    bot_blocked_at: datetime | None
    name_enc: str | None
    names: list[str] = field(default_factory=list)


async def report_plain_cases(session: AsyncSession, *, cases: list[Report], deps: Deps) -> dict[int, Outcome]:
    """Report plain cases (see `is_plain`) in one go; each index is answered with its case or its error."""
    at = deps.clock.now()
    items = [_Item(index, data, caller) for index, data, caller in cases]
    if not items:
        return {}
    found: _Found | None = None
    if _dialect(session) == "postgresql":
        found = await _look_up(session, items, deps)
        units, approval_regions = _units(found.organisations, {i.data.org_code for i in items})
    else:
        units, approval_regions = await _organisations(
            session, {i.data.org_code for i in items}, {i.data.region_code for i in items}
        )
    allowed: dict[tuple[int, int], bool] = {}
    for item in items:
        data = item.data
        unit = units.get(data.org_code)
        if unit is None or unit.id is None:
            item.answer = InvalidCase(f"org_code {data.org_code!r} is not a registered organisation", field="org_code")
            continue
        jurisdiction = (item.caller.org_id, unit.id)
        if jurisdiction not in allowed:
            allowed[jurisdiction] = await is_above(session, item.caller, unit)
        if not allowed[jurisdiction]:
            item.answer = Forbidden("this API key may not report cases for that organisation", field="org_code")
            continue
        if data.region_code != unit.region_code and not (
            is_city_level(unit.region_code) and city_of(data.region_code) == unit.region_code
        ):
            # The region decides which approval department gets the bad reviews (Art. 14).
            item.answer = InvalidCase(
                f"region_code {data.region_code} is outside the region of {data.org_code} ({unit.region_code})",
                field="region_code",
            )
            continue
        if data.completed_at > at + service.CLOCK_SKEW:
            item.answer = InvalidCase("completed_at is in the future", field="completed_at")
            continue
        if data.region_code not in approval_regions:
            item.answer = InvalidCase(
                f"no approval department is registered for region {data.region_code}; bad reviews could not be routed",
                field="region_code",
            )
            continue
        item.unit, item.hash = unit, service.hash_request(data)

    live = [i for i in items if i.answer is None]
    await _earlier_reports(session, live, None if found is None else found.earlier)
    fresh = [i for i in live if i.answer is None and i.twin_of is None]
    for item in fresh:
        if item.data.citizen.phone and item.phone is None:  # (`_look_up` normalised the valid ones)
            try:
                item.phone = normalise_phone(item.data.citizen.phone)
            except InvalidPhone as exc:
                item.answer = InvalidCase(str(exc), field="citizen.phone")
    fresh = [i for i in fresh if i.answer is None]
    citizens, joining = await _citizens(session, fresh, deps, at, found)
    await _write(session, fresh, citizens, joining, deps, at, found)

    by_index = {i.index: i for i in items}
    out: dict[int, Outcome] = {}
    for item in items:
        if item.twin_of is not None and item.answer is None:
            first = by_index[item.twin_of].answer
            if isinstance(first, CaseAnswer):
                item.answer = CaseAnswer(first.case_id, False, first.invitation, first.messages)
            elif first is not None:
                item.answer = first
        if item.answer is None:
            raise BrokenInvariant("a case was left without an answer")
        out[item.index] = item.answer
    return out


# The look-ups of every report, built once (the sets of values bound at execution).
_ORGANISATIONS = select(Organisation).where(
    or_(
        in_set(col(Organisation.code), "codes"),
        (col(Organisation.kind) == "city_bureau") & in_set(col(Organisation.region_code), "cities"),
        (col(Organisation.kind) == "county_dept") & in_set(col(Organisation.region_code), "counties"),
    )
)
_EARLIER = sql_select(
    col(ServiceCase.id),
    col(ServiceCase.org_id),
    col(ServiceCase.case_no),
    col(ServiceCase.request_hash),
    col(ServiceCase.invitation_id),
).where(in_set(col(ServiceCase.org_id), "orgs"), in_set(col(ServiceCase.case_no), "nos"))


def _dialect(session: AsyncSession) -> str:
    return session.sync_session.get_bind().dialect.name


@dataclass
class _Found:
    """What a report reads before it writes (PostgreSQL, one statement): the organisations it names and
    the approval departments of its regions, the earlier reports of its case numbers, the citizens of
    its phone numbers, and ids for the rows it may add."""

    organisations: list[_Org]
    earlier: list[tuple[Any, ...]]  # as `_EARLIER` answers
    citizens: dict[str, _CitizenRow]
    ids: dict[str, list[int]]

    def take(self, table: str) -> int:
        """The next id taken for a new row of `table` (invitation, case, citizen)."""
        return self.ids[table].pop()


# Ids are taken for each case number without an earlier report and each phone number without a citizen,
# whether or not its case passes the checks: a refused case leaves a gap in the ids, nothing else. The
# service cases and citizens are found with `= ANY(…)` on their unique keys, as `_EARLIER` and
# `_CITIZENS_BY_HASH` do: an index scan whatever the statistics say (a join of the keys with the table
# may become a scan of all of an organisation's cases when the plan is made with statistics that are
# out of date); the pairs are then matched among the few rows found.
_LOOK_UP = text(
    """
WITH k AS (SELECT DISTINCT * FROM unnest(CAST(:key_codes AS VARCHAR[]), CAST(:key_nos AS VARCHAR[])) AS k(code, no)),
e AS (
    SELECT sc.id, sc.org_id, sc.case_no, sc.request_hash, sc.invitation_id, o.code
    FROM service_case sc JOIN organisation o ON o.id = sc.org_id
    WHERE sc.org_id = ANY(ARRAY(SELECT id FROM organisation WHERE code = ANY(CAST(:key_codes AS VARCHAR[]))))
        AND sc.case_no = ANY(CAST(:key_nos AS VARCHAR[]))
),
c AS (
    SELECT c.id, c.phone_hash, c.phone_enc, c.sms_opted_out_at, c.telegram_chat_id, c.bot_blocked_at, c.name_enc
    FROM citizen c WHERE c.phone_hash = ANY(CAST(:hashes AS VARCHAR[]))
),
fresh AS (
    SELECT
        (SELECT count(*) FROM k WHERE NOT EXISTS (SELECT FROM e WHERE e.code = k.code AND e.case_no = k.no)) AS cases,
        cardinality(CAST(:hashes AS VARCHAR[])) - (SELECT count(*) FROM c) AS citizens
)
SELECT
    ARRAY(
        SELECT ROW(o.id, o.code, o.name, o.kind, o.region_code, o.parent_id) FROM organisation o
        WHERE o.code = ANY(CAST(:codes AS VARCHAR[]))
            OR (o.kind = 'city_bureau' AND o.region_code = ANY(CAST(:cities AS VARCHAR[])))
            OR (o.kind = 'county_dept' AND o.region_code = ANY(CAST(:counties AS VARCHAR[])))
    ),
    ARRAY(SELECT ROW(e.id, e.org_id, e.case_no, e.request_hash, e.invitation_id) FROM e),
    ARRAY(SELECT ROW(c.*) FROM c),
    ARRAY(SELECT nextval(pg_get_serial_sequence('invitation', 'id')) FROM generate_series(1, (SELECT cases FROM fresh))),
    ARRAY(SELECT nextval(pg_get_serial_sequence('service_case', 'id')) FROM generate_series(1, (SELECT cases FROM fresh))),
    ARRAY(SELECT nextval(pg_get_serial_sequence('citizen', 'id')) FROM generate_series(1, (SELECT citizens FROM fresh)))
"""
)


async def _look_up(session: AsyncSession, items: list[_Item], deps: Deps) -> _Found:
    """Everything the report reads, in one statement (PostgreSQL): `_ORGANISATIONS`, `_EARLIER` and
    `_CITIZENS_BY_HASH` together, with the ids its new rows may need."""
    codes = {i.data.org_code for i in items}
    regions = {i.data.region_code for i in items}
    keys = sorted({(i.data.org_code, i.data.case_no) for i in items})
    hashes: set[str] = set()
    for item in items:
        if item.data.citizen.phone:
            try:
                item.phone = normalise_phone(item.data.citizen.phone)
            except InvalidPhone:
                continue  # answered after the checks that come first
            item.phone_hash = deps.vault.lookup_hash(item.phone)
            hashes.add(item.phone_hash)
    params = {
        "key_codes": [k[0] for k in keys],
        "key_nos": [k[1] for k in keys],
        "hashes": sorted(hashes),
        "codes": sorted(codes),
        "cities": sorted(r for r in regions if is_city_level(r)),
        "counties": sorted(r for r in regions if not is_city_level(r)),
    }
    (row,) = await fetch_rows(session, _LOOK_UP, params)
    organisations, earlier, citizens, invitation_ids, case_ids, citizen_ids = row
    return _Found(
        organisations=[_Org(*row) for row in organisations],
        earlier=list(earlier),
        citizens={r[1]: _CitizenRow(r[0], r[2], r[3], r[4], r[5], r[6]) for r in citizens},
        ids={"invitation": invitation_ids[::-1], "case": case_ids[::-1], "citizen": citizen_ids[::-1]},
    )


async def _organisations(session: AsyncSession, codes: set[str], regions: set[str]) -> tuple[dict[str, _Org], set[str]]:
    """The units named by code, and which of the regions have their approval department (one query)."""
    params = {
        "codes": sorted(codes),
        "cities": sorted(r for r in regions if is_city_level(r)),
        "counties": sorted(r for r in regions if not is_city_level(r)),
    }
    rows = (await session.exec(_ORGANISATIONS, params=params)).all()
    return _units([_Org(o.id or 0, o.code, o.name, o.kind, o.region_code, o.parent_id) for o in rows], codes)


def _units(rows: Sequence[_Org], codes: set[str]) -> tuple[dict[str, _Org], set[str]]:
    units = {o.code: o for o in rows if o.code in codes}
    approval_regions = {
        o.region_code
        for o in rows
        if (o.kind == "city_bureau" and is_city_level(o.region_code))
        or (o.kind == "county_dept" and not is_city_level(o.region_code))
    }
    return units, approval_regions


async def _earlier_reports(session: AsyncSession, items: list[_Item], known: list[tuple[Any, ...]] | None) -> None:
    """Answer the cases reported before (the same content: the earlier answer; other content: a conflict),
    and mark the repeats within the list. `known`: the earlier reports of the items' case numbers, when
    read already (`_look_up`)."""
    first_of: dict[tuple[int, str], _Item] = {}
    for item in items:
        if item.unit is None or item.unit.id is None:
            raise BrokenInvariant("unit.id is missing")
        key = (item.unit.id, item.data.case_no)
        first = first_of.get(key)
        if first is None:
            first_of[key] = item
        elif first.hash != item.hash:
            item.answer = _conflict(item.data.case_no)
        else:
            item.twin_of = first.index
    if not first_of:
        return
    if known is None:
        org_ids = {k[0] for k in first_of}
        case_nos = {k[1] for k in first_of}
        params = {"orgs": sorted(org_ids), "nos": sorted(case_nos)}
        found = (await session.exec(_EARLIER, params=params)).all()  # type: ignore[call-overload]
    else:
        found = known
    earlier: dict[int, tuple[_Item, int]] = {}
    for case_id, org_id, case_no, stored_hash, invitation_id in found:
        first = first_of.get((org_id, case_no))
        if first is None:
            continue
        if stored_hash != first.hash:
            first.answer = _conflict(case_no)
        else:
            earlier[case_id] = (first, invitation_id)
    if not earlier:
        return
    invitation_ids = {inv for _, inv in earlier.values()}
    invitations = {
        i.id: i for i in (await session.exec(select(Invitation).where(col(Invitation.id).in_(invitation_ids)))).all()
    }
    messages = await prompts_of(session, invitation_ids)
    for case_id, (item, invitation_id) in earlier.items():
        invitation = invitations.get(invitation_id)
        if invitation is None:
            raise BrokenInvariant("invitation is missing")
        item.answer = CaseAnswer(case_id, False, InvitationView.of(invitation), messages.get(invitation_id, []))


def _conflict(case_no: str) -> CaseConflict:
    return CaseConflict(
        f"case_no {case_no!r} was already reported with different content; cases are not edited", field="case_no"
    )


async def prompts_of(session: AsyncSession, invitation_ids: set[int]) -> dict[int, list[MessageView]]:
    """The prompts queued for each invitation, oldest first."""
    out: dict[int, list[MessageView]] = {}
    if not invitation_ids:
        return out
    rows = await _rows(
        session,
        sql_select(
            col(OutboundMessage.id),
            col(OutboundMessage.channel),
            col(OutboundMessage.status),
            col(OutboundMessage.not_before),
            col(OutboundMessage.invitation_id),
        )
        .where(col(OutboundMessage.invitation_id).in_(invitation_ids), col(OutboundMessage.purpose) == "prompt")
        .order_by(col(OutboundMessage.id)),
    )
    for message_id, channel, status, not_before, invitation_id in rows.all():
        out.setdefault(invitation_id, []).append(
            MessageView(message_id, channel, status, as_utc(not_before) if not_before else None)
        )
    return out


_CITIZEN_COLUMNS = (
    col(Citizen.id),
    col(Citizen.phone_hash),
    col(Citizen.phone_enc),
    col(Citizen.sms_opted_out_at),
    col(Citizen.telegram_chat_id),
    col(Citizen.bot_blocked_at),
    col(Citizen.name_enc),
)
_CITIZENS_BY_HASH = sql_select(*_CITIZEN_COLUMNS).where(in_set(col(Citizen.phone_hash), "hashes"))


@dataclass
class _Joining:
    """The citizens' rows a report adds (PostgreSQL writes them with the cases, in one statement)."""

    new: list[dict[str, Any]] = field(default_factory=list)  # citizens first seen
    named: list[dict[str, Any]] = field(default_factory=list)  # known citizens given their name


async def _citizens(
    session: AsyncSession, items: list[_Item], deps: Deps, at: datetime, found: _Found | None
) -> tuple[dict[str, _CitizenRow], _Joining]:
    """The citizen of each phone number, keyed by lookup hash; a new number's citizen is created and a
    known citizen without a name takes the first name given. On SQLite they are written here (one insert
    for all); with `found` (PostgreSQL, read and ids taken beforehand) they are returned, to be written
    with the cases."""
    joining = _Joining()
    wanted: dict[str, _Item] = {}
    names: dict[str, list[str]] = {}
    for item in items:
        if item.phone is None:
            continue
        key = item.phone_hash or deps.vault.lookup_hash(item.phone)  # (`_look_up` hashed it already)
        wanted.setdefault(key, item)
        item.phone_hash = key
        if item.data.citizen.name:
            names.setdefault(key, []).append(item.data.citizen.name)
    if not wanted:
        return {}, joining
    if found is None:
        known = await _citizen_rows(session, set(wanted))
    else:
        known = {key: row for key, row in found.citizens.items() if key in wanted}
    # In one order (the lookup hash) for every writer: two reports that both add the same new citizens
    # wait for each other on their unique key instead of deadlocking, and the later one retries.
    missing = sorted(key for key in wanted if key not in known)
    for key in missing:
        phone = wanted[key].phone
        if phone is None:
            raise BrokenInvariant("phone is missing")
        first_name = names.get(key, [None])[0]
        phone_enc = deps.vault.encrypt(phone)
        name_enc = deps.vault.encrypt(first_name) if first_name else None
        row: dict[str, Any] = {}
        if found is not None:
            row["id"] = found.take("citizen")
            known[key] = _CitizenRow(row["id"], phone_enc, None, None, None, name_enc)
        row.update(
            phone_hash=key, phone_enc=phone_enc, phone_masked=mask_phone(phone), name_enc=name_enc, created_at=at
        )
        joining.new.append(row)
    for key, citizen in sorted(known.items()):
        given = names.get(key)
        if given and citizen.name_enc is None:
            citizen.name_enc = deps.vault.encrypt(given[0])
            joining.named.append({"id": citizen.id, "name_enc": citizen.name_enc})
    if found is None:
        await _join_citizens(session, joining, known)
        joining = _Joining()
    return known, joining


async def _join_citizens(session: AsyncSession, joining: _Joining, known: dict[str, _CitizenRow]) -> None:
    """Write the new citizens (their ids into `known`) and the names given (SQLite)."""
    if joining.new:
        # A concurrent report may create the same citizen: its row is taken, not doubled.
        by_hash = {row["phone_hash"]: row for row in joining.new}
        for citizen_id, phone_hash in await insert_rows(
            session, Citizen, joining.new, conflict=(), returning=["id", "phone_hash"]
        ):
            written = by_hash.pop(phone_hash)
            known[phone_hash] = _CitizenRow(citizen_id, written["phone_enc"], None, None, None, written["name_enc"])
        if by_hash:
            taken = await _citizen_rows(session, set(by_hash))
            for key, citizen in taken.items():
                if citizen.name_enc is None and by_hash[key]["name_enc"] is not None:
                    citizen.name_enc = by_hash[key]["name_enc"]
                    joining.named.append({"id": citizen.id, "name_enc": citizen.name_enc})
            known.update(taken)
    for named in joining.named:
        await session.exec(
            update(Citizen)
            .where(col(Citizen.id) == named["id"], col(Citizen.name_enc).is_(None))
            .values(name_enc=named["name_enc"])
        )


async def _citizen_rows(session: AsyncSession, hashes: set[str]) -> dict[str, _CitizenRow]:
    rows = await session.exec(_CITIZENS_BY_HASH, params={"hashes": sorted(hashes)})  # type: ignore[call-overload]
    return {
        phone_hash: _CitizenRow(citizen_id, phone_enc, opted_out, chat_id, blocked, name_enc)
        for citizen_id, phone_hash, phone_enc, opted_out, chat_id, blocked, name_enc in rows.all()
    }


async def _write(
    session: AsyncSession,
    items: list[_Item],
    citizens: dict[str, _CitizenRow],
    joining: _Joining,
    deps: Deps,
    at: datetime,
    found: _Found | None,
) -> None:
    """Write the new citizens, invitations, cases, statistics and prompts of the new cases.

    The rows are the same on both databases. SQLite inserts them table by table, the ids of each
    insert feeding the next; PostgreSQL takes the ids beforehand (`_look_up`) and writes every table
    in one statement (`gateway.store.chain`)."""
    if not items and not joining.named:
        return
    from gateway.stats.rollup import apply, chain_parts, contributions, invitation_facts

    due: dict[datetime, Any] = {}
    invitation_rows: list[dict[str, Any]] = []
    for item in items:
        data, unit = item.data, item.unit
        if unit is None:
            raise BrokenInvariant("unit is missing")
        citizen = citizens.get(item.phone_hash) if item.phone_hash else None
        item.citizen_id = citizen.id if citizen else None
        expires = due.get(data.completed_at)
        if expires is None:
            expires = due[data.completed_at] = deps.calendar.due_at(
                data.completed_at, service.RATING_WINDOW_WORKING_DAYS
            )
        invitation_rows.append(
            {
                "token": service.new_token(),
                "org_id": unit.id,
                "citizen_id": item.citizen_id,
                "kind": "single",
                "group_no": data.case_no,
                "region_code": data.region_code,
                "item_name": data.item_name,
                "office_name": data.office_name or unit.name,
                "service_channel": data.service_channel,
                "completed_at": data.completed_at,
                "expires_at": expires.at,
                "expires_provisional": expires.provisional,
                "status": "open",
                "created_at": at,
            }
        )
    if found is None:
        invitation_ids = await _insert_many(session, Invitation, invitation_rows) if items else []
    else:
        invitation_ids = [found.take("invitation") for _ in items]
    tally: dict[Any, Counter[str]] = {}
    tz = deps.calendar.tz
    case_rows: list[dict[str, Any]] = []
    for item, row, invitation_id in zip(items, invitation_rows, invitation_ids, strict=True):
        data = item.data
        row["id"] = invitation_id
        facts = invitation_facts(_InvitationFacts(row), item_code=data.item_code, staff_id=data.staff_id, tz=tz)  # type: ignore[arg-type]
        for key, sums in contributions(facts).items():
            tally.setdefault(key, Counter()).update(sums)
        case_rows.append(
            {
                "org_id": row["org_id"],
                "reporter_org_id": item.caller.org_id,
                "case_no": data.case_no,
                "item_code": data.item_code,
                "item_name": data.item_name,
                "region_code": data.region_code,
                "staff_id": data.staff_id,
                "service_channel": data.service_channel,
                "completed_at": data.completed_at,
                "batch_no": None,
                "theme_no": None,
                "invitation_id": invitation_id,
                "request_hash": item.hash,
                "created_at": at,
            }
        )
    prompts = _prompt_rows(items, invitation_rows, citizens, deps, at)
    if found is None:
        case_ids = await _insert_many(session, ServiceCase, case_rows) if items else []
        await apply(session, tally)
        inserted = await insert_rows(
            session, OutboundMessage, prompts, conflict=["dedupe_key"], returning=["id", "invitation_id"]
        )
    else:
        case_ids = [found.take("case") for _ in items]
        for row, case_id in zip(case_rows, case_ids, strict=True):
            row["id"] = case_id
        # Rows with a unique key go in the order of that key (the citizens' already are): two reports of the
        # same cases at once then wait for each other on it instead of deadlocking, and the later one retries.
        parts = [
            (_part(Citizen, joining.new), joining.new),
            (_part(Citizen, joining.named, update_where="citizen.name_enc IS NULL"), joining.named),
            (_part(Invitation, invitation_rows), sorted(invitation_rows, key=_by_org_and_number("group_no"))),
            (_part(ServiceCase, case_rows), sorted(case_rows, key=_by_org_and_number("case_no"))),
            (_part(OutboundMessage, prompts, tail=_PROMPT_CONFLICT, returning=("id", "invitation_id")), prompts),
        ]
        if autocommits(session):
            parts += chain_parts(tally)  # last: the statement is the transaction, so this is its end
        else:
            await apply(session, tally)  # at the commit, after the report's other cases
        inserted = await chained_insert(session, [(p, rows) for p, rows in parts if rows])
    queued: dict[int, list[MessageView]] = {}
    by_invitation = {p["invitation_id"]: p for p in prompts}
    for message_id, invitation_id in inserted:
        row = by_invitation[invitation_id]
        queued.setdefault(invitation_id, []).append(
            MessageView(message_id, row["channel"], "queued", as_utc(row["not_before"]) if row["not_before"] else None)
        )
    for item, row, case_id in zip(items, invitation_rows, case_ids, strict=True):
        view = InvitationView(row["token"], as_utc(row["expires_at"]), row["expires_provisional"], "single", "open")
        item.answer = CaseAnswer(case_id, True, view, queued.get(row["id"], []))


def _by_org_and_number(number: str) -> Callable[[dict[str, Any]], tuple[int, str]]:
    return lambda row: (row["org_id"], row[number])


_PROMPT_CONFLICT = "ON CONFLICT (dedupe_key) DO NOTHING"
_PARTS: dict[tuple[Any, ...], Part] = {}


def _part(model: Any, rows: list[dict[str, Any]], **shape: Any) -> Part:
    """The chained insert's part writing `rows` (its columns: the rows' keys), built once per shape."""
    columns = tuple(rows[0]) if rows else ()
    key = (model, columns, *sorted(shape.items()))
    part = _PARTS.get(key)
    if part is None:
        part = _PARTS[key] = Part(model, columns, **shape)
    return part


class _InvitationFacts:
    """An invitation row as `invitation_facts` reads it, without building the ORM object."""

    def __init__(self, row: dict[str, Any]) -> None:
        self.completed_at = row["completed_at"]
        self.region_code = row["region_code"]
        self.org_id = row["org_id"]


def _prompt_rows(
    items: list[_Item],
    invitation_rows: list[dict[str, Any]],
    citizens: dict[str, _CitizenRow],
    deps: Deps,
    at: datetime,
) -> list[dict[str, Any]]:
    """The SMS prompt of each new invitation whose citizen can be reached (a chat goes `report_case`'s way)."""
    settings = deps.settings
    not_before = deps.quiet.hold_until("prompt", at)
    rows: list[dict[str, Any]] = []
    for item, invitation in zip(items, invitation_rows, strict=True):
        if item.phone_hash is None or item.citizen_id is None:
            continue
        citizen = citizens[item.phone_hash]
        if as_utc(invitation["expires_at"]) <= at:
            continue
        if settings.bot_enabled and citizen.telegram_chat_id is not None and citizen.bot_blocked_at is None:
            channel = "telegram"
        elif citizen.phone_enc is not None and citizen.sms_opted_out_at is None:
            channel = "sms"
        else:
            continue
        token = invitation["token"]
        buttons = None
        if channel == "telegram":
            body, buttons = bot_prompt(
                invitation_id=invitation["id"],
                item_name=invitation["item_name"],
                office_name=invitation["office_name"],
                completed_at=invitation["completed_at"],
                tz=settings.timezone,
            )
        else:
            body = sms_prompt(
                signature=settings.sms_signature,
                item_name=invitation["item_name"],
                completed_at=invitation["completed_at"],
                tz=settings.timezone,
                link=deps.rating_url(token),
                bot_link=telegram_deep_link(settings.telegram_bot_username, token) if settings.bot_enabled else None,
            )
        rows.append(
            {
                "channel": channel,
                "citizen_id": item.citizen_id,
                "purpose": "prompt",
                "priority": PRIORITY_BULK,
                "body": body,
                "buttons": buttons,
                "status": "queued",
                "not_before": not_before,
                "next_attempt_at": not_before or at,
                "attempts": 0,
                "dedupe_key": f"prompt:{invitation['id']}",
                "invitation_id": invitation["id"],
                "created_at": at,
                "updated_at": at,
            }
        )
    return rows


async def report_cases(session: AsyncSession, *, cases: list[Report], deps: Deps) -> dict[int, Outcome]:
    """Report a list of cases in the session's transaction; each index is answered with its case or its error.

    Plain cases go set-based; cases of batches and themes, and cases naming a chat, follow one at a
    time through `report_case`, each in a savepoint, so that a refused one leaves nothing behind.
    """
    out = await report_plain_cases(session, cases=[c for c in cases if is_plain(c[1])], deps=deps)
    for index, data, caller in cases:
        if is_plain(data):
            continue
        try:
            async with session.begin_nested():
                intake = await service.report_case(session, caller=caller, data=data, deps=deps)
                messages = [MessageView.of(m) for m in intake.messages]
        except DomainError as exc:
            out[index] = exc
            continue
        if intake.case.id is None:
            raise BrokenInvariant("case.id is missing")
        out[index] = CaseAnswer(intake.case.id, intake.created, InvitationView.of(intake.invitation), messages)
    return out


async def _rows(session: AsyncSession, query: Select[*tuple[Any, ...]]) -> Result[*tuple[Any, ...]]:
    """Run a SQLAlchemy select of columns (sqlmodel's `exec` is typed for its own `select` only)."""
    return await session.exec(query)  # type: ignore[call-overload]


async def _insert_many(session: AsyncSession, model: Any, rows: list[dict[str, Any]]) -> list[int]:
    """Insert the rows with one statement sent in batches by the driver; their ids, in the rows' order."""
    connection = await session.connection()
    statement = insert(model).returning(model.id, sort_by_parameter_order=True)
    return list((await connection.execute(statement, rows)).scalars().all())


class CaseWriter:
    """Single reports that arrive at the same moment share one transaction (group commit).

    Each `report` waits for the writer's next pass (`gateway.store.group_commit`), which reports every
    case waiting then (up to `max_batch`) with `report_cases`, so a department system posting cases one
    by one on several connections costs the database a few statements per pass instead of a dozen per
    case. A case's answer is the one it would get alone: its own error, or its case. A pass that fails
    unexpectedly is retried case by case, so one bad case cannot refuse its neighbours.
    """

    def __init__(self, store: Store, deps: Deps, *, max_batch: int = 200) -> None:
        self.store, self.deps = store, deps
        self._commits = GroupCommit(self._report_all, max_batch=max_batch, refusal=_own_error, name="case-writer")

    async def report(self, caller: Caller, data: CaseIn) -> Outcome:
        return await self._commits.submit((data, caller))

    async def close(self) -> None:
        await self._commits.close()

    async def _report_all(self, items: list[tuple[CaseIn, Caller]]) -> list[Outcome]:
        outcomes = await self.write([(n, data, caller) for n, (data, caller) in enumerate(items)])
        return [outcomes[n] for n in range(len(items))]

    async def write(self, cases: list[Report]) -> dict[int, Outcome]:
        """Report the cases in one transaction of their own; concurrent writers of the same cases (or of the
        same citizens' first cases) collide on unique keys, and the retry finds the winner's rows.

        On PostgreSQL plain cases are read with one statement and written with one, so when all the cases
        are plain that statement is the transaction: no BEGIN and COMMIT around it (`Store.autocommit`)."""
        alone = self.store.dialect == "postgresql" and all(is_plain(data) for _, data, _ in cases)
        for attempt in range(3):
            try:
                async with self.store.autocommit() if alone else self.store.transaction() as session:
                    return await report_cases(session, cases=cases, deps=self.deps)
            except IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def _own_error(error: BaseException) -> BaseException | None:
    """A case that could not be reported answers its own error (a stopping writer cancels its request)."""
    return None if isinstance(error, asyncio.CancelledError) else error
