"""Signing in and out, the one-time set-up link, and changing one's password."""

from __future__ import annotations

from aiohttp import web

from gateway.console import audit
from gateway.console.accounts import (
    MAX_PASSWORD,
    AccountError,
    change_password,
    set_password,
    user_by_login,
    user_by_setup_token,
    verify_password,
)
from gateway.console.models import ConsoleUser
from gateway.console.web import (
    CONSOLE,
    EXPIRED,
    PERSON,
    SESSION_COOKIE,
    SIGNIN_COOKIE,
    PageError,
    client_address,
    form,
    local_path,
    person,
    render,
    set_session_cookie,
    signin_page,
)
from gateway.errors import BrokenInvariant
from gateway.web.keys import DEPS, STORE

routes = web.RouteTableDef()


@routes.get("/")
async def home(request: web.Request) -> web.StreamResponse:
    person(request)
    raise web.HTTPSeeOther("/console/tickets")


def _signin_page(request: web.Request, *, status: int = 200, error: str = "", login: str = "") -> web.Response:
    return signin_page(
        request,
        "signin.html",
        status=status,
        error=error,
        login=login,
        next=local_path(request.query.get("next")),
        expired=request.get(EXPIRED, False),
        password_set=request.query.get("set") == "1",
    )


@routes.get("/signin")
async def signin_form(request: web.Request) -> web.StreamResponse:
    if request.get(PERSON) is not None:
        raise web.HTTPSeeOther("/console/tickets")
    return _signin_page(request)


@routes.post("/signin")
async def signin(request: web.Request) -> web.StreamResponse:
    state, deps = request.config_dict[CONSOLE], request.config_dict[DEPS]
    data = await form(request, csrf=request.cookies.get(SIGNIN_COOKIE, ""))
    login = str(data.get("login", "")).strip()[:64]
    password = str(data.get("password", ""))[: MAX_PASSWORD * 4]
    address = client_address(request)
    now = deps.clock.now()
    if not login or not password:
        return _signin_page(request, status=422, error="请输入登录名和密码。", login=login)
    if await state.throttle.blocked(login, address, now):
        async with request.config_dict[STORE].transaction() as session:
            audit.record(session, kind="sign_in_throttled", at=now, login=login, address=address)
        minutes = max(1, request.config_dict[DEPS].settings.console_signin_window_seconds // 60)
        return _signin_page(
            request,
            status=429,
            login=login,
            error=f"登录失败次数过多，请 {minutes} 分钟后再试。如忘记密码，请联系管理员重置。",
        )
    async with request.config_dict[STORE].transaction() as session:
        user = await user_by_login(session, login)
        ok = verify_password(user, password)
        if not ok or user is None:
            audit.record(session, kind="sign_in_failed", at=now, user=user, login=login, address=address)
        elif user.disabled_at is not None:
            audit.record(session, kind="sign_in_failed", at=now, user=user, address=address, reason="disabled")
        else:
            audit.record(session, kind="sign_in", at=now, user=user, address=address)
    if not ok or user is None:
        await state.throttle.failed(login, address, now)
        return _signin_page(request, status=401, error="登录名或密码不正确。", login=login)
    if user.disabled_at is not None:
        return _signin_page(
            request, status=403, error="该账号已停用。如需恢复，请联系本单位负责人或平台管理员。", login=login
        )
    await state.throttle.succeeded(login, now)
    if not (user.id is not None):
        raise BrokenInvariant("user.id is not None")
    token, _ = await state.sessions.create(user.id, now)
    response = web.HTTPSeeOther(local_path(str(data.get("next", ""))))
    set_session_cookie(response, state, token)
    response.del_cookie(SIGNIN_COOKIE, path="/console")
    raise response


@routes.post("/signout")
async def signout(request: web.Request) -> web.StreamResponse:
    p = person(request)
    await form(request)
    state = request.config_dict[CONSOLE]
    await state.sessions.end(p.token)
    async with request.config_dict[STORE].transaction() as session:
        audit.record(
            session,
            kind="sign_out",
            at=request.config_dict[DEPS].clock.now(),
            user=p.user,
            address=client_address(request),
        )
    response = web.HTTPSeeOther("/console/signin")
    response.del_cookie(SESSION_COOKIE, path="/console")
    raise response


async def _setup_user(request: web.Request) -> ConsoleUser:
    token = request.match_info["token"]
    async with request.config_dict[STORE].transaction() as session:
        user = await user_by_setup_token(session, token, request.config_dict[DEPS].clock.now())
    if user is None:
        raise PageError(
            404, "这个链接无效或已过期（链接只能使用一次，72 小时内有效）。请联系管理员重新生成。", title="链接无效"
        )
    return user


@routes.get("/setup/{token}")
async def setup_form(request: web.Request) -> web.StreamResponse:
    user = await _setup_user(request)
    return signin_page(request, "setup.html", login=user.login, error="")


@routes.post("/setup/{token}")
async def setup(request: web.Request) -> web.StreamResponse:
    data = await form(request, csrf=request.cookies.get(SIGNIN_COOKIE, ""))
    await _setup_user(request)
    password, again = str(data.get("password", "")), str(data.get("again", ""))
    now = request.config_dict[DEPS].clock.now()
    error = ""
    async with request.config_dict[STORE].transaction() as session:
        user = await user_by_setup_token(session, request.match_info["token"], now)
        if user is None:
            raise PageError(404, "这个链接无效或已过期。请联系管理员重新生成。", title="链接无效")
        if password != again:
            error = "两次输入的密码不一致。"
        else:
            try:
                set_password(user, password, now)
            except AccountError as exc:
                error = exc.message
            else:
                audit.record(session, kind="password_set", at=now, user=user, address=client_address(request))
        login = user.login
    if error:
        return signin_page(request, "setup.html", status=422, login=login, error=error)
    raise web.HTTPSeeOther("/console/signin?set=1")


@routes.get("/account")
async def account_form(request: web.Request) -> web.StreamResponse:
    person(request)
    return render(request, "account.html", error="", done=request.query.get("done") == "1")


@routes.post("/account")
async def account(request: web.Request) -> web.StreamResponse:
    p = person(request)
    data = await form(request)
    now = request.config_dict[DEPS].clock.now()
    current, new, again = str(data.get("current", "")), str(data.get("password", "")), str(data.get("again", ""))
    if new != again:
        return render(request, "account.html", status=422, error="两次输入的新密码不一致。", done=False)
    async with request.config_dict[STORE].transaction() as session:
        user = await session.get(ConsoleUser, p.user.id)
        if not (user is not None):
            raise BrokenInvariant("user is not None")
        try:
            change_password(user, current=current, new=new, at=now)
        except AccountError as exc:
            error = exc.message
        else:
            error = ""
            audit.record(session, kind="password_changed", at=now, user=user, address=client_address(request))
    if error:
        return render(request, "account.html", status=422, error=error, done=False)
    # Other sessions of the account end with the old password; this one carries on with a new token.
    state = request.config_dict[CONSOLE]
    if not (p.user.id is not None):
        raise BrokenInvariant("p.user.id is not None")
    await state.sessions.end_all(p.user.id)
    await state.sessions.end(p.token)
    token, _ = await state.sessions.create(p.user.id, now)
    response = web.HTTPSeeOther("/console/account?done=1")
    set_session_cookie(response, state, token)
    raise response
