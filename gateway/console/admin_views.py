"""For the platform operator: organisations and accounts. For supervisors: their organisation's audit trail."""

from __future__ import annotations

from aiohttp import web
from sqlmodel import col, select

from gateway.console import audit
from gateway.console.accounts import (
    AccountError,
    add_user,
    disable_user,
    enable_user,
    list_users,
    reset_user,
    setup_link,
)
from gateway.console.models import ROLES, ConsoleUser
from gateway.console.web import CONSOLE, PageError, client_address, form, person, render, require_admin
from gateway.orgs import OrgError, add_org, issue_key
from gateway.store.models import ORG_KINDS, Organisation
from gateway.web.keys import DEPS, SETTINGS, STORE

routes = web.RouteTableDef()


async def _orgs_page(
    request: web.Request, *, status: int = 200, error: str = "", key: str = "", values: dict[str, str] | None = None
) -> web.Response:
    async with request.config_dict[STORE].transaction() as session:
        orgs = (
            await session.exec(select(Organisation).order_by(col(Organisation.region_code), col(Organisation.code)))
        ).all()
    return render(
        request, "admin_orgs.html", status=status, orgs=orgs, kinds=ORG_KINDS, error=error, key=key, values=values or {}
    )


@routes.get("/admin/orgs")
async def orgs(request: web.Request) -> web.StreamResponse:
    require_admin(person(request))
    return await _orgs_page(request)


@routes.post("/admin/orgs")
async def org_add(request: web.Request) -> web.StreamResponse:
    p = person(request)
    require_admin(p)
    data = await form(request)
    values = {k: str(data.get(k, "")).strip() for k in ("code", "name", "kind", "region", "parent")}
    now = request.config_dict[DEPS].clock.now()
    try:
        async with request.config_dict[STORE].transaction() as session:
            org = await add_org(
                session,
                code=values["code"],
                name=values["name"],
                kind=values["kind"],
                region_code=values["region"],
                parent_code=values["parent"] or None,
                at=now,
            )
            key = await issue_key(session, org=org, label="created in the console", at=now)
            audit.record(session, kind="org_added", at=now, user=p.user, address=client_address(request), code=org.code)
    except OrgError as exc:
        return await _orgs_page(request, status=422, error=f"未能登记：{exc}", values=values)
    return await _orgs_page(request, key=key)


async def _users_page(
    request: web.Request,
    *,
    status: int = 200,
    error: str = "",
    link: str = "",
    link_for: str = "",
    values: dict[str, str] | None = None,
) -> web.Response:
    async with request.config_dict[STORE].transaction() as session:
        users = await list_users(session)
        orgs = (await session.exec(select(Organisation).order_by(col(Organisation.code)))).all()
    return render(
        request,
        "admin_users.html",
        status=status,
        users=users,
        orgs=orgs,
        roles=ROLES,
        error=error,
        link=link,
        link_for=link_for,
        values=values or {},
    )


@routes.get("/admin/users")
async def users(request: web.Request) -> web.StreamResponse:
    require_admin(person(request))
    return await _users_page(request)


@routes.post("/admin/users")
async def user_add(request: web.Request) -> web.StreamResponse:
    p = person(request)
    require_admin(p)
    data = await form(request)
    values = {k: str(data.get(k, "")).strip() for k in ("org", "login", "role")}
    now = request.config_dict[DEPS].clock.now()
    try:
        async with request.config_dict[STORE].transaction() as session:
            user, token = await add_user(
                session, org_code=values["org"], login=values["login"], role=values["role"], at=now
            )
            audit.record(
                session, kind="user_added", at=now, user=p.user, address=client_address(request), login_added=user.login
            )
    except AccountError as exc:
        return await _users_page(request, status=422, error=exc.message, values=values)
    return await _users_page(
        request, link=setup_link(request.config_dict[SETTINGS].public_url, token), link_for=user.login
    )


@routes.post(r"/admin/users/{action:(disable|enable|reset)}")
async def user_change(request: web.Request) -> web.StreamResponse:
    p = person(request)
    require_admin(p)
    data = await form(request)
    login = str(data.get("login", "")).strip()
    action = request.match_info["action"]
    now = request.config_dict[DEPS].clock.now()
    token = ""
    try:
        async with request.config_dict[STORE].transaction() as session:
            if action == "disable":
                if login == p.user.login:
                    raise AccountError("不能停用自己的账号。", field="login")
                user = await disable_user(session, login=login, at=now)
            elif action == "enable":
                user = await enable_user(session, login=login)
            else:
                user, token = await reset_user(session, login=login, at=now)
            audit.record(
                session,
                kind=f"user_{action}d" if action != "reset" else "user_reset",
                at=now,
                user=p.user,
                address=client_address(request),
                target=login,
            )
    except AccountError as exc:
        return await _users_page(request, status=422, error=exc.message)
    if action in ("disable", "reset") and user.id is not None:
        await request.config_dict[CONSOLE].sessions.end_all(user.id)
    if token:
        return await _users_page(
            request, link=setup_link(request.config_dict[SETTINGS].public_url, token), link_for=login
        )
    raise web.HTTPSeeOther("/console/admin/users")


@routes.get("/audit")
async def audit_page(request: web.Request) -> web.StreamResponse:
    """Supervisors read their organisation's trail; the operator's admins read everyone's."""
    p = person(request)
    if p.user.role not in ("supervisor", "admin"):
        raise PageError(403, "审计记录仅向科室负责人和平台管理员开放。", title="无权查看")
    async with request.config_dict[STORE].transaction() as session:
        rows = await audit.recent(session, org_id=None if p.is_admin else p.org.id)
        logins = {u.id: u.login for u in (await session.exec(select(ConsoleUser))).all()}
    return render(request, "audit.html", rows=rows, logins=logins)
