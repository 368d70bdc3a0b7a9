"""Where a bad review goes (Art. 13-15): 属地管理、分级负责; 谁办理、谁负责; 谁建设、谁负责."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.evaluations.reasons import Catalogue
from gateway.orgs import approval_org_for, platform_builder_for
from gateway.store.models import ServiceCase


class RoutingError(Exception):
    """No approval department can take the ticket (intake prevents this for new cases)."""


@dataclass(frozen=True)
class Route:
    approval_org_id: int
    unit_org_id: int | None
    responsibility: str  # handling | platform
    note: str
    units: tuple[int, ...] = ()  # the handling units of the rated cases (several for a theme rated as a whole)


async def route(
    session: AsyncSession, *, region_code: str, cases: list[ServiceCase], reason_codes: list[int], catalogue: Catalogue
) -> Route:
    """The approval department of the case's level, and the unit it should transfer the ticket to."""
    approval = await approval_org_for(session, region_code)
    if approval is None or approval.id is None:
        raise RoutingError(f"no approval department for region {region_code}")
    if catalogue.is_platform(reason_codes):
        builder = await platform_builder_for(session, region_code)
        if builder is not None:
            return Route(
                approval.id,
                builder.id,
                "platform",
                "reasons concern the platform: its builder handles it",
                tuple(sorted({c.org_id for c in cases})),
            )
        note = "reasons concern the platform, but no platform builder is registered: the handling unit is proposed"
    else:
        note = "handled by the unit that handled the case"
    units = tuple(sorted({c.org_id for c in cases}))
    if len(units) == 1:
        return Route(approval.id, units[0], "handling", note, units)
    # A theme ("一件事") rated as a whole spans several units (Art. 11): no single unit answers for it, so the
    # approval department transfers it to the unit at fault or coordinates them in a consultation (会商, Art. 15).
    return Route(
        approval.id,
        None,
        "handling",
        f"the rated theme spans {len(units)} units: the approval department transfers it or opens a consultation",
        units,
    )
