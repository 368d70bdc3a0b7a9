"""The approval department and platform builder of a region are read once per transaction (a group of
bad reviews routes every ticket through them), and never carried into the next transaction."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.orgs import add_org, approval_org_for, platform_builder_for
from gateway.store.db import Store
from tests.conftest import START
from tests.statements import statements_sent


async def test_a_region_is_read_once_per_transaction_and_afresh_in_the_next(database_url):
    store = Store.connect(database_url)
    try:
        async with store.transaction() as session:
            await add_org(session, code="county", name="汉滨区行政审批服务局", kind="county_dept", region_code="610902", parent_code=None, at=START)
        seen = statements_sent(store, starting="SELECT organisation")
        async with AsyncSession(store.engine, expire_on_commit=False) as session:  # one session, two transactions
            async with session.begin():
                first = [await approval_org_for(session, "610902") for _ in range(3)]
                builders = [await platform_builder_for(session, "610902") for _ in range(2)]
            assert [o.code if o else None for o in first] == ["county"] * 3 and builders == [None, None]
            assert len(seen) == 3  # the department once; the builder in the county and in the city once each
            async with store.transaction() as other:
                await add_org(other, code="builder", name="汉滨区政务服务平台", kind="platform_builder", region_code="610902", parent_code=None, at=START)
            async with session.begin():
                builder = await platform_builder_for(session, "610902")
            assert builder is not None and builder.code == "builder"  # not the absence remembered before
    finally:
        await store.close()
