"""Accounts: the one-time link, passwords, reset and the operator's pages."""

from __future__ import annotations

import re

from sqlmodel import select

from gateway.__main__ import main
from gateway.console.models import ConsoleUser
from gateway.web.keys import STORE
from tests.gateway.console.conftest import PASSWORD, Browser


async def test_setup_link_sets_the_password_once_and_reset_issues_a_new_one(client, people, new_browser):  # type: ignore[no-untyped-def]
    admin = Browser(client)
    await admin.sign_in("ops.admin")
    status, html = await admin.post("/console/admin/users", {"org": "hanbin-market", "login": "li.si", "role": "clerk"})
    assert status == 200
    link = re.search(r'<code id="setup-link">([^<]+)</code>', html)
    assert link and link.group(1).startswith("http://gateway.test/console/setup/")
    path = link.group(1).removeprefix("http://gateway.test")

    person = await new_browser()
    status, html = await person.get(path)
    assert status == 200 and "li.si" in html
    status, html = await person.post(path, {"password": "short", "again": "short"})
    assert status == 422 and "至少 10 个字符" in html
    status, html = await person.post(path, {"password": "a long passphrase", "again": "a different one!"})
    assert status == 422 and "不一致" in html
    status, html = await person.post(path, {"password": "a long passphrase", "again": "a long passphrase"})
    assert status == 200 and "密码已设置" in html
    status, html = await person.get(path)
    assert status == 404 and "链接无效" in html  # used up
    status, html = await person.sign_in("li.si", "a long passphrase")
    assert status == 200 and "差评工单" in html

    # Changing the password needs the current one.
    status, html = await person.post(
        "/console/account", {"current": "wrong", "password": "another passphrase", "again": "another passphrase"}
    )
    assert status == 422 and "当前密码不正确" in html
    status, html = await person.post(
        "/console/account",
        {"current": "a long passphrase", "password": "another passphrase", "again": "another passphrase"},
    )
    assert status == 200 and "密码已修改" in html

    status, html = await admin.post("/console/admin/users/reset", {"login": "li.si"})
    assert status == 200 and 'id="setup-link"' in html
    resp = await person.client.get("/console/tickets", allow_redirects=False)
    assert resp.status == 303  # reset ends the person's sessions
    status, html = await person.sign_in("li.si", "another passphrase")
    assert status == 401


async def test_operator_registers_an_organisation(client, people):  # type: ignore[no-untyped-def]
    admin = Browser(client)
    await admin.sign_in("ops.admin")
    status, html = await admin.post(
        "/console/admin/orgs",
        {"code": "hanbin-edu", "name": "汉滨区教育局", "kind": "unit", "region": "610902", "parent": "hanbin"},
    )
    assert status == 200 and re.search(r'<code id="api-key">gk_[0-9a-f]{12}_', html)
    status, html = await admin.post(
        "/console/admin/orgs", {"code": "bad code!", "name": "x", "kind": "unit", "region": "610902"}
    )
    assert status == 422 and "未能登记" in html


def test_cli_user_add_prints_a_link_and_disable_reset(tmp_path, monkeypatch, capsys):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("GATEWAY_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("GATEWAY_PUBLIC_URL", "https://pj.example.cn")
    monkeypatch.chdir(tmp_path)
    assert (
        main(
            [
                "org",
                "add",
                "--code",
                "hanbin",
                "--name",
                "汉滨区行政审批服务局",
                "--kind",
                "county_dept",
                "--region",
                "610902",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["user", "add", "--org", "hanbin", "--name", "zhang.san", "--role", "clerk"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^https://pj\.example\.cn/console/setup/\S{20,}$", out, re.M)
    assert main(["user", "add", "--org", "hanbin", "--name", "zhang.san", "--role", "clerk"]) == 2
    assert "已被使用" in capsys.readouterr().err
    assert (
        main(["user", "add", "--org", "hanbin", "--name", "boss", "--role", "admin"]) == 2
    )  # admins are the operator's
    assert main(["user", "disable", "--name", "zhang.san"]) == 0
    assert main(["user", "reset", "--name", "zhang.san"]) == 2  # enable first
    assert main(["user", "enable", "--name", "zhang.san"]) == 0
    assert main(["user", "reset", "--name", "zhang.san"]) == 0
    assert "/console/setup/" in capsys.readouterr().out


async def test_passwords_are_stored_as_argon2id(client, people):  # type: ignore[no-untyped-def]
    async with client.app[STORE].transaction() as session:
        user = (await session.exec(select(ConsoleUser).where(ConsoleUser.login == "hb.clerk"))).one()
    assert (
        user.password_hash is not None
        and user.password_hash.startswith("$argon2id$")
        and PASSWORD not in user.password_hash
    )
