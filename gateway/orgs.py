"""Organisations, their API keys and their jurisdiction (DESIGN.md §5: each key sees only its own)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import ColumnElement, bindparam, event, false, or_, true
from sqlalchemy.orm import Session
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.errors import BrokenInvariant
from gateway.store.models import APPROVAL_KINDS, ORG_KINDS, ApiKey, Organisation, Ticket

REGION_CODE = re.compile(r"^\d{6}$")
ORG_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class OrgError(ValueError):
    """An organisation cannot be registered as asked."""


@dataclass(frozen=True)
class Caller:
    """The organisation behind an authenticated API request."""

    org_id: int
    code: str
    kind: str
    region_code: str

    @classmethod
    def of(cls, org: Organisation) -> Caller:
        if org.id is None:
            raise BrokenInvariant("org.id is missing")
        return cls(org_id=org.id, code=org.code, kind=org.kind, region_code=org.region_code)

    @property
    def is_approval(self) -> bool:
        return self.kind in APPROVAL_KINDS

    def covers_region(self, region_code: str) -> bool:
        """Whether a region falls under this organisation's approval jurisdiction."""
        if self.kind == "operator":
            return True
        if self.kind == "city_bureau":
            return region_code[:4] == self.region_code[:4]
        if self.kind == "county_dept":
            return region_code == self.region_code
        return False


def city_of(region_code: str) -> str:
    """The city-level region code (行政区划: the last two digits 00 mark the city itself)."""
    return region_code[:4] + "00"


def is_city_level(region_code: str) -> bool:
    return region_code.endswith("00")


async def add_org(
    session: AsyncSession, *, code: str, name: str, kind: str, region_code: str, parent_code: str | None, at: datetime
) -> Organisation:
    """Register an organisation; validates kind, codes and parent."""
    if kind not in ORG_KINDS:
        raise OrgError(f"kind must be one of {', '.join(ORG_KINDS)}")
    if not ORG_CODE.match(code):
        raise OrgError("code must be 1-64 letters, digits, '.', '_' or '-'")
    if not REGION_CODE.match(region_code):
        raise OrgError("region_code must be a six-digit 行政区划 code such as 610902")
    if not name.strip() or len(name) > 200:
        raise OrgError("name must be 1-200 characters")
    if kind == "city_bureau" and not is_city_level(region_code):
        raise OrgError("a city approval bureau needs a city-level region code ending in 00")
    if kind == "county_dept" and is_city_level(region_code):
        raise OrgError("a county approval department needs a county region code (not ending in 00)")
    parent_id = None
    if parent_code:
        parent = await org_by_code(session, parent_code)
        if parent is None:
            raise OrgError(f"parent organisation {parent_code!r} is not registered")
        parent_id = parent.id
    if await org_by_code(session, code) is not None:
        raise OrgError(f"organisation {code!r} is already registered")
    org = Organisation(
        code=code, name=name.strip(), kind=kind, region_code=region_code, parent_id=parent_id, created_at=at
    )
    session.add(org)
    await session.flush()
    return org


async def org_by_code(session: AsyncSession, code: str) -> Organisation | None:
    return (await session.exec(select(Organisation).where(Organisation.code == code))).first()


def _hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


async def issue_key(session: AsyncSession, *, org: Organisation, label: str, at: datetime) -> str:
    """Create an API key for an organisation; the key is returned once and stored only hashed."""
    if org.id is None:
        raise BrokenInvariant("org.id is missing")
    prefix = secrets.token_hex(6)
    key = f"gk_{prefix}_{secrets.token_urlsafe(32)}"
    session.add(ApiKey(org_id=org.id, prefix=prefix, key_hash=_hash_key(key), label=label, created_at=at))
    await session.flush()
    return key


async def authenticate(session: AsyncSession, key: str) -> Caller | None:
    """The caller behind a Bearer key, or None; the comparison runs in constant time."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != "gk" or len(parts[1]) != 12 or len(key) > 200:
        return None
    row = (
        await session.exec(
            select(ApiKey, Organisation)
            .join(Organisation, col(Organisation.id) == ApiKey.org_id)
            .where(ApiKey.prefix == parts[1], ApiKey.revoked_at.is_(None))  # type: ignore[union-attr]
        )
    ).first()
    if row is None:
        return None
    api_key, org = row
    if not hmac.compare_digest(api_key.key_hash, _hash_key(key)):
        return None
    return Caller.of(org)


class Unit(Protocol):
    """What the jurisdiction rules read of an organisation: an `Organisation`, or a row read with its fields."""

    @property
    def id(self) -> int | None: ...
    @property
    def region_code(self) -> str: ...
    @property
    def parent_id(self) -> int | None: ...


async def is_above(session: AsyncSession, caller: Caller, unit: Unit) -> bool:
    """Whether the caller is the unit itself, one of its parents, or the approval department over it."""
    if caller.kind == "operator" or caller.org_id == unit.id or caller.covers_region(unit.region_code):
        return True
    parent_id = unit.parent_id
    seen: set[int] = set()
    while parent_id is not None and parent_id not in seen:
        if parent_id == caller.org_id:
            return True
        seen.add(parent_id)
        parent = await session.get(Organisation, parent_id)
        parent_id = parent.parent_id if parent else None
    return False


def ticket_scope(caller: Caller) -> ColumnElement[bool]:
    """The SQL condition selecting the tickets a caller may see."""
    if caller.kind == "operator":
        return true()
    if caller.kind == "city_bureau":
        return col(Ticket.region_code).startswith(caller.region_code[:4])
    if caller.kind == "county_dept":
        return Ticket.region_code == caller.region_code  # type: ignore[return-value]
    if caller.kind in ("unit", "platform_builder"):
        return or_(Ticket.unit_org_id == caller.org_id, Ticket.assignee_org_id == caller.org_id)  # type: ignore[arg-type]
    return false()


def can_see_ticket(caller: Caller, ticket: Ticket) -> bool:
    if caller.kind in ("unit", "platform_builder"):
        return caller.org_id in (ticket.unit_org_id, ticket.assignee_org_id)
    return caller.covers_region(ticket.region_code)


# Built once (every bad review routes its ticket through these); the values are bound at execution.
_ORG_OF_KIND_IN = select(Organisation).where(
    Organisation.kind == bindparam("kind"), Organisation.region_code == bindparam("region")
)


_KNOWN = "orgs_of_kind_in"


async def _org_of_kind_in(session: AsyncSession, kind: str, region: str) -> Organisation | None:
    """The organisation of a kind in a region, read once per transaction: a group of bad reviews of one
    county routes every ticket through the same departments."""
    known: dict[tuple[str, str], Organisation | None] = session.info.setdefault(_KNOWN, {})
    if (kind, region) not in known:
        known[(kind, region)] = (await session.exec(_ORG_OF_KIND_IN, params={"kind": kind, "region": region})).first()
    return known[(kind, region)]


async def approval_org_for(session: AsyncSession, region_code: str) -> Organisation | None:
    """The approval department of a case's level (Art. 14): the city bureau or the county department."""
    kind = "city_bureau" if is_city_level(region_code) else "county_dept"
    return await _org_of_kind_in(session, kind, region_code)


async def platform_builder_for(session: AsyncSession, region_code: str) -> Organisation | None:
    """The unit that built the platform serving a region: the county's own, else the city's."""
    for region in (region_code, city_of(region_code)):
        found = await _org_of_kind_in(session, "platform_builder", region)
        if found is not None:
            return found
    return None


@event.listens_for(Session, "after_transaction_end")
def _forget_at_transaction_end(session: Session, transaction: Any) -> None:
    if transaction.parent is None:
        session.info.pop(_KNOWN, None)
