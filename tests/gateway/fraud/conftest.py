"""Fixtures for fraud tests: settings with no read lag and small samples, and a seeder for past ratings.

Ratings the rules look back at are seeded as rows (an invitation and its evaluation), as a month of
ratings would have left them; the ratings whose signals matter (the page, the cookie, the address) go
through the real rating page.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from sqlmodel import select

from gateway.wiring.fraud import FRAUD_DETECTOR
from gateway.privacy import mask_phone, normalise_phone
from gateway.settings import Settings, load_settings
from gateway.store.models import Citizen, Evaluation, FraudFlag, Invitation, Organisation
from gateway.web.keys import DEPS, STORE

_tokens = itertools.count(1)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return load_settings(
        database_url=database_url,
        public_url="http://gateway.test",
        run_dispatcher=False,
        fraud_lag_seconds=0,
        fraud_share_min_sample=10,
        fraud_share_min_peers=5,
        fraud_address_count=6,
        fraud_client_address_header="X-Real-IP",
    )


@dataclass
class Seeder:
    client: Any

    async def citizen(self, phone: str | None = None, chat: int | None = None) -> int:
        deps = self.client.app[DEPS]
        async with self.client.app[STORE].transaction() as session:
            row = Citizen(created_at=deps.clock.now(), telegram_chat_id=chat)
            if phone:
                e164 = normalise_phone(phone)
                row.phone_hash, row.phone_enc, row.phone_masked = (
                    deps.vault.lookup_hash(e164),
                    deps.vault.encrypt(e164),
                    mask_phone(e164),
                )
            session.add(row)
            await session.flush()
            return row.id  # type: ignore[return-value]

    async def rating(
        self,
        *,
        citizen_id: int | None,
        level: int = 5,
        at: datetime | None = None,
        org: str = "hanbin-market",
        staff_id: str | None = "HB-017",
        content: str = "",
        channel: str = "web",
    ) -> int:
        deps = self.client.app[DEPS]
        at = at or deps.clock.now()
        async with self.client.app[STORE].transaction() as session:
            unit = (await session.exec(select(Organisation).where(Organisation.code == org))).one()
            n = next(_tokens)
            invitation = Invitation(
                token=f"seed{n:08d}",
                org_id=unit.id,
                citizen_id=citizen_id,
                kind="single",
                group_no=f"SEED-{n}",  # type: ignore[arg-type]
                region_code=unit.region_code,
                item_name="个体工商户设立登记",
                office_name=unit.name,
                service_channel="window",
                completed_at=at,
                expires_at=at.replace(year=at.year + 1),
                status="rated",
                rated_at=at,
                created_at=at,
            )
            session.add(invitation)
            await session.flush()
            evaluation = Evaluation(
                invitation_id=invitation.id,
                scope="all",
                citizen_id=citizen_id,
                level=level,  # type: ignore[arg-type]
                reason_codes=[213] if level <= 2 else [],
                content=content,
                staff_id=staff_id,
                channel=channel,
                created_at=at,
            )
            session.add(evaluation)
            await session.flush()
            return evaluation.id  # type: ignore[return-value]


@pytest.fixture
def seed(client) -> Seeder:  # type: ignore[no-untyped-def]
    return Seeder(client)


async def detect(client: Any) -> int:
    """Run the app's detector until it has read everything; the number of flags it raised."""
    return (await client.app[FRAUD_DETECTOR].run_until_idle()).flags


async def flags(client: Any, rule: str | None = None) -> list[tuple[FraudFlag, list[int]]]:
    from gateway.fraud.models import FlagEvaluation

    async with client.app[STORE].transaction() as session:
        query = select(FraudFlag).order_by(FraudFlag.id)  # type: ignore[arg-type]
        if rule:
            query = query.where(FraudFlag.rule == rule)
        out = []
        for flag in (await session.exec(query)).all():
            ids = (
                await session.exec(select(FlagEvaluation.evaluation_id).where(FlagEvaluation.flag_id == flag.id))
            ).all()
            out.append((flag, sorted(ids)))
        return out
