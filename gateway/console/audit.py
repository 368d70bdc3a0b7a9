"""The console's audit trail: every sign-in, failure, sign-out, number reveal and action (a table)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.console.models import ConsoleAudit, ConsoleUser

log = logging.getLogger(__name__)

KINDS = {
    "sign_in": "登录",
    "sign_in_failed": "登录失败",
    "sign_in_throttled": "登录受限",
    "sign_out": "退出",
    "password_set": "设置密码",
    "password_changed": "修改密码",
    "number_reveal": "查看完整号码",
    "ticket_action": "工单操作",
    "campaign_action": "回访活动操作",
    "fraud_ruling": "认定刷评线索",
    "user_added": "新增账号",
    "user_disabled": "停用账号",
    "user_enabled": "启用账号",
    "user_reset": "重置密码",
    "org_added": "新增单位",
}


def record(
    session: AsyncSession,
    *,
    kind: str,
    at: datetime,
    user: ConsoleUser | None = None,
    login: str = "",
    address: str = "",
    ticket_id: int | None = None,
    event_id: int | None = None,
    **detail: Any,
) -> None:
    """Add an audit row to the caller's transaction (so it commits, or not, with what it records)."""
    session.add(
        ConsoleAudit(
            at=at,
            kind=kind,
            user_id=user.id if user else None,
            org_id=user.org_id if user else None,
            login=(user.login if user else login)[:64],
            address=address[:64],
            ticket_id=ticket_id,
            event_id=event_id,
            detail=detail,
        )
    )
    log.info(
        "console audit", extra={"kind": kind, "login": (user.login if user else login)[:64], "ticket_id": ticket_id}
    )


async def recent(session: AsyncSession, *, org_id: int | None, limit: int = 200) -> list[ConsoleAudit]:
    query = select(ConsoleAudit).order_by(col(ConsoleAudit.id).desc()).limit(limit)
    if org_id is not None:
        query = query.where(ConsoleAudit.org_id == org_id)
    return list((await session.exec(query)).all())


async def people_of_events(session: AsyncSession, event_ids: list[int]) -> dict[int, str]:
    """The person behind each ticket event taken in the console (the event itself names the organisation)."""
    if not event_ids:
        return {}
    rows = await session.exec(
        select(ConsoleAudit.event_id, ConsoleAudit.login).where(
            ConsoleAudit.kind == "ticket_action", col(ConsoleAudit.event_id).in_(event_ids)
        )
    )
    return {event_id: login for event_id, login in rows.all() if event_id is not None}
