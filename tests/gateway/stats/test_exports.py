"""Exports: within the jurisdiction, phone numbers masked, formula-looking cells defused, CSV and XLSX."""

from __future__ import annotations

import csv
import io
import zipfile

from gateway.stats.exports import safe_cell
from tests.conftest import World


def test_formula_characters_get_a_leading_apostrophe() -> None:
    for risky in ("=1+1", "+1", "-2", "@SUM(A1)", "\tx", "\rx"):
        assert safe_cell(risky) == "'" + risky
    assert safe_cell("个体工商户") == "个体工商户" and safe_cell(5) == 5 and safe_cell(None) == ""


async def test_evaluation_export_csv_is_scoped_masked_and_safe(client, world: World, rate) -> None:  # type: ignore[no-untyped-def]
    await rate(2, reasons=[213], text="=HYPERLINK(\"http://evil\")", item_name="=cmd|' /C calc'!A0")
    await rate(5, org="hanyin-market", region="610921")
    resp = await client.get("/api/v1/exports/evaluations", params={"format": "csv"}, headers=world.auth("hanbin"))
    assert resp.status == 200 and resp.content_type == "text/csv"
    text = (await resp.read()).decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][0] == "评价编号" and len(rows) == 2  # the header and hanbin's one evaluation
    row = dict(zip(rows[0], rows[1]))
    assert row["事项名称"].startswith("'=") and row["文字评价"].startswith("'=")
    assert row["评价人手机号"] == "138****1234" and "13812341234" not in text
    assert row["评价内容编码"] == "213" and row["是否计入统计"] == "计入"


async def test_ticket_export_xlsx(client, world: World, rate) -> None:  # type: ignore[no-untyped-def]
    await rate(1, reasons=[115], item_name="+danger")
    resp = await client.get("/api/v1/exports/tickets", params={"format": "xlsx"}, headers=world.auth("city"))
    assert resp.status == 200
    body = await resp.read()
    with zipfile.ZipFile(io.BytesIO(body)) as book:
        xml = "".join(book.read(n).decode() for n in book.namelist() if n.startswith("xl/") and n.endswith(".xml"))
    assert "'+danger" in xml and "工单编号" in xml and "138****1234" in xml and "13812341234" not in xml
    other = await client.get("/api/v1/exports/tickets", params={"format": "csv"}, headers=world.auth("hanyin"))
    assert len(list(csv.reader(io.StringIO((await other.read()).decode("utf-8-sig"))))) == 1  # header only


async def test_export_bad_input(client, world: World) -> None:  # type: ignore[no-untyped-def]
    for params, field in (({"format": "pdf"}, "format"), ({"from": "2020-01-01", "to": "2026-01-01"}, "to"),
                          ({"to": "2026-01-01"}, "from"), ({"sheet": "1"}, "sheet")):
        resp = await client.get("/api/v1/exports/evaluations", params=params, headers=world.auth("city"))
        assert resp.status == 422, params
        assert (await resp.json())["error"]["field"] == field
