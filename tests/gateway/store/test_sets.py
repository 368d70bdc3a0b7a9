"""`in_set`: a set of values bound as one parameter. The same rows as an IN list on both databases; on
PostgreSQL one statement text (so one prepared statement) whatever the number of values."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlmodel import col

from gateway.store.db import Store
from gateway.store.models import Organisation
from gateway.store.sets import in_set
from tests.conftest import START
from tests.statements import statements_sent

_BY_ID = select(Organisation.code).where(in_set(col(Organisation.id), "ids")).order_by(col(Organisation.code))
_RENAME = update(Organisation).where(in_set(col(Organisation.code), "codes")).values(name="renamed").returning(
    col(Organisation.id)
)


async def test_a_set_of_values_selects_and_updates_the_rows_it_names(database_url):
    store = Store.connect(database_url)
    try:
        async with store.transaction() as session:
            session.add_all(
                Organisation(code=f"o{i}", name=f"O{i}", kind="unit", region_code="610902", created_at=START)
                for i in range(6)
            )
        async with store.transaction() as session:
            ids = {code: i for i, code in (await session.exec(select(Organisation.id, Organisation.code))).all()}
        seen = statements_sent(store)
        async with store.transaction() as session:
            one = (await session.exec(_BY_ID, params={"ids": [ids["o2"]]})).scalars().all()
            three = (await session.exec(_BY_ID, params={"ids": [ids["o5"], ids["o0"], ids["o3"]]})).scalars().all()
            none = (await session.exec(_BY_ID, params={"ids": []})).scalars().all()
            renamed = (await session.exec(_RENAME, params={"codes": ["o1", "o4", "nobody"]})).scalars().all()
        assert one == ["o2"] and three == ["o0", "o3", "o5"] and none == []
        assert sorted(renamed) == sorted([ids["o1"], ids["o4"]])
        selects = [s for s in seen if s.lstrip().startswith("SELECT")]
        if store.dialect == "postgresql":
            assert len(set(selects)) == 1 and "= ANY(" in selects[0]  # one text for 1, 3 and 0 values
        else:
            assert len(set(selects)) == 3  # an IN list per number of values
    finally:
        await store.close()
