"""The console's web layer: the sub-application, sessions, CSRF, security headers and HTML error pages.

A signed-in person acts as their organisation: `Caller.of(org)`, the same object an API key yields, so
jurisdiction and permissions are enforced by the same code as /api/v1.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from jinja2 import Environment, FileSystemLoader, select_autoescape
from multidict import MultiDictProxy

from gateway.clock import as_utc
from gateway.console import texts
from gateway.console.audit import KINDS
from gateway.console.models import ConsoleUser
from gateway.console.sessions import DatabaseSessions, Lifetime, RedisSessions, SessionData, Sessions
from gateway.console.throttle import DatabaseThrottle, Limits, RedisThrottle, Throttle
from gateway.errors import DomainError
from gateway.orgs import Caller
from gateway.store.models import Organisation
from gateway.web.keys import DEPS, REDIS, SETTINGS, STORE

log = logging.getLogger(__name__)

SESSION_COOKIE = "gw_console"
SIGNIN_COOKIE = "gw_signin"  # the sign-in form's CSRF pair before a session exists
STATIC = Path(__file__).with_name("static")
HTMX_VERSION = "2.0.11"  # static/htmx.min.js, from the npm package htmx.org (licence 0BSD)
TEMPLATES = Path(__file__).with_name("templates")

# No inline script or style anywhere: htmx is loaded from /console/static and configured by a meta tag.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


@dataclass
class ConsoleState:
    sessions: Sessions
    throttle: Throttle
    secure_cookies: bool


CONSOLE: web.AppKey[ConsoleState] = web.AppKey("console")


@dataclass
class Person:
    """The signed-in person, their organisation, and the Caller they act as."""

    user: ConsoleUser
    org: Organisation
    caller: Caller
    session: SessionData
    token: str

    @property
    def csrf(self) -> str:
        return self.session.csrf

    @property
    def is_admin(self) -> bool:
        return self.user.role == "admin" and self.org.kind == "operator"


PERSON: web.RequestKey[Person] = web.RequestKey("console_person", Person)
EXPIRED: web.RequestKey[bool] = web.RequestKey("console_session_expired", bool)


class PageError(Exception):
    """Answer with an HTML page that explains (Chinese) and changes nothing."""

    def __init__(self, status: int, message: str, *, title: str = "无法完成") -> None:
        super().__init__(message)
        self.status, self.message, self.title = status, message, title


async def console_ctx(app: web.Application) -> AsyncIterator[None]:
    """Sessions and throttling on Redis when configured, else on the database (shared by every process)."""
    settings = app[SETTINGS]
    lifetime = Lifetime(
        idle_seconds=settings.console_idle_minutes * 60, max_seconds=settings.console_session_hours * 3600
    )
    limits = Limits(
        per_account=settings.console_signin_failures_per_account,
        per_address=settings.console_signin_failures_per_address,
        window_seconds=settings.console_signin_window_seconds,
    )
    redis = app.get(REDIS)
    sessions: Sessions
    throttle: Throttle
    if redis is not None:
        sessions, throttle = RedisSessions(redis, lifetime), RedisThrottle(redis, limits)
    else:
        sessions, throttle = DatabaseSessions(app[STORE], lifetime), DatabaseThrottle(app[STORE], limits)
    secure = settings.gateway_env == "production" or settings.public_url.startswith("https://")
    app[CONSOLE] = ConsoleState(sessions=sessions, throttle=throttle, secure_cookies=secure)
    yield


# --- templates ----------------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def environment(timezone: str = "Asia/Shanghai") -> Environment:
    tz = ZoneInfo(timezone)

    def local(value: datetime | str | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return as_utc(value).astimezone(tz).strftime(fmt) if value is not None else ""

    env = Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True, default_for_string=True)
    )

    def deadline(value: str) -> str:
        """A due instant (24:00 of its last working day) as that day and 24:00, as the rules state it."""
        day = as_utc(datetime.fromisoformat(value)).astimezone(tz) - timedelta(days=1)
        return day.strftime("%Y-%m-%d 24:00")

    env.filters["local"] = local
    env.filters["deadline"] = deadline
    env.globals.update(
        STATUS=texts.STATUS,
        ACTION=texts.ACTION,
        CATEGORY=texts.CATEGORY,
        RESPONSIBILITY=texts.RESPONSIBILITY,
        EVALUATION_CHANNEL=texts.EVALUATION_CHANNEL,
        SERVICE_CHANNEL=texts.SERVICE_CHANNEL,
        ORG_KIND=texts.ORG_KIND,
        ROLE=texts.ROLE,
        CAMPAIGN_STATUS=texts.CAMPAIGN_STATUS,
        CONTACT_METHOD=texts.CONTACT_METHOD,
        GROUNDS=texts.GROUNDS,
        APPEAL_DECISION=texts.APPEAL_DECISION,
        EXTENSION_DECISION=texts.EXTENSION_DECISION,
        CALLBACK_OUTCOME=texts.CALLBACK_OUTCOME,
        NOT_COUNTED=texts.NOT_COUNTED,
        FRAUD_RULE=texts.FRAUD_RULE,
        FLAG_STATUS=texts.FLAG_STATUS,
        AUDIT=KINDS,
        HTMX_VERSION=HTMX_VERSION,
    )
    return env


def render(request: web.Request, template: str, *, status: int = 200, **context: Any) -> web.Response:
    p: Person | None = request.get(PERSON)
    env = environment(request.config_dict[SETTINGS].timezone)
    html = env.get_template(template).render(person=p, csrf=p.csrf if p else "", path=request.path, **context)
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")


def fragment(request: web.Request, template: str, **context: Any) -> web.Response:
    """An htmx fragment (the same template parts the full page includes)."""
    env = environment(request.config_dict[SETTINGS].timezone)
    p: Person | None = request.get(PERSON)
    html = env.get_template(template).render(person=p, csrf=p.csrf if p else "", **context)
    return web.Response(text=html, content_type="text/html", charset="utf-8")


# --- people and forms -----------------------------------------------------------------------------------


def person(request: web.Request) -> Person:
    """The signed-in person; anyone else is sent to the sign-in page (or told, for htmx and POSTs)."""
    found: Person | None = request.get(PERSON)
    if found is None:
        if request.method == "GET" and "HX-Request" not in request.headers:
            raise web.HTTPSeeOther(f"/console/signin?next={_safe_next(request.path_qs)}")
        raise PageError(401, "您尚未登录，或登录已超时。请重新登录后再操作；刚才的操作没有执行。", title="请重新登录")
    return found


def _safe_next(path: str) -> str:
    from urllib.parse import quote

    return quote(path if path.startswith("/console/") and not path.startswith("//") else "/console/", safe="")


def local_path(value: str | None) -> str:
    """A redirect target inside the console only (never another site)."""
    if value and value.startswith("/console/") and "//" not in value and "\\" not in value:
        return value
    return "/console/"


async def form(request: web.Request, *, csrf: str | None = None) -> MultiDictProxy[str]:
    """The posted form, after checking its CSRF token against the session's (or the sign-in cookie's)."""
    data = await request.post()
    sent = data.get("csrf_token")
    expected = csrf if csrf is not None else (request[PERSON].csrf if request.get(PERSON) else None)
    if not isinstance(sent, str) or not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise PageError(
            403,
            "页面已过期或来源不明（安全校验未通过）。请刷新页面后重新提交；刚才的操作没有执行。",
            title="请刷新页面",
        )
    for key, value in data.items():
        if isinstance(value, str) and "\x00" in value:
            raise PageError(422, f"「{texts.FIELD.get(key, key)}」含有无法保存的字符。")
    return data  # type: ignore[return-value]


def require_admin(p: Person) -> None:
    if not p.is_admin:
        raise PageError(404, "页面不存在。", title="页面不存在")


def client_address(request: web.Request) -> str:
    return (request.remote or "")[:64]


def set_session_cookie(response: web.StreamResponse, state: ConsoleState, token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE, token, path="/console", httponly=True, samesite="Lax", secure=state.secure_cookies
    )


def signin_page(request: web.Request, name: str, *, status: int = 200, **context: Any) -> web.Response:
    """A page whose form is posted before a session exists: its CSRF token pairs a cookie with a field."""
    state = request.config_dict[CONSOLE]
    token = secrets.token_urlsafe(24)
    response = render(request, name, status=status, signin_csrf=token, **context)
    response.set_cookie(
        SIGNIN_COOKIE,
        token,
        path="/console",
        httponly=True,
        samesite="Strict",
        secure=state.secure_cookies,
        max_age=3600,
    )
    return response


# --- the middleware ----------------------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _headers(response: web.StreamResponse, request: web.Request) -> None:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    if not request.path.startswith("/console/static/"):
        # Every console page may carry personal data (a masked number, a citizen's words): never stored.
        response.headers["Cache-Control"] = "no-store"


async def _load_person(request: web.Request) -> None:
    token = request.cookies.get(SESSION_COOKIE, "")
    if not token:
        return
    state = request.config_dict[CONSOLE]
    now = request.config_dict[DEPS].clock.now()
    data = await state.sessions.get(token, now)
    if data is None:
        request[EXPIRED] = True
        return
    async with request.config_dict[STORE].transaction() as session:
        user = await session.get(ConsoleUser, data.user_id)
        org = await session.get(Organisation, user.org_id) if user is not None else None
    if user is None or org is None or user.disabled_at is not None or user.password_hash is None:
        await state.sessions.end(token)
        return
    request[PERSON] = Person(user=user, org=org, caller=Caller.of(org), session=data, token=token)


@web.middleware
async def console_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Load the person, answer every fault with a Chinese page (never a traceback), add the security headers."""
    try:
        if not request.path.startswith("/console/static/"):
            await _load_person(request)
        response = await handler(request)
    except web.HTTPRedirection as exc:
        _headers(exc, request)
        raise
    except PageError as exc:
        response = _error_page(request, exc.status, exc.title, exc.message)
    except DomainError as exc:
        response = _error_page(request, exc.status, "未找到" if exc.status == 404 else "无法完成", texts.refusal(exc))
    except web.HTTPException as exc:
        if exc.status == 404:
            response = _error_page(request, 404, "页面不存在", "页面不存在。请从导航栏重新进入。")
        elif exc.status == 405:
            response = _error_page(request, 405, "无法完成", "不支持这种访问方式。请从页面上的按钮操作。")
        elif exc.status == 413:
            response = _error_page(request, 413, "无法完成", "提交的内容过多。")
        else:
            response = _error_page(request, exc.status, "无法完成", "请求无法处理。")
    except Exception:
        request_id = uuid.uuid4().hex[:16]
        log.exception("console error", extra={"request_id": request_id, "path": request.path})
        response = _error_page(
            request, 500, "出错了", f"系统出错，操作可能没有完成。请稍后再试，或联系平台管理员并提供编号 {request_id}。"
        )
    _headers(response, request)
    return response


def _error_page(request: web.Request, status: int, title: str, message: str) -> web.Response:
    return render(request, "error.html", status=status, title=title, message=message)


def build_console() -> web.Application:
    """The console, mounted at /console by create_app."""
    from gateway.console import admin_views, auth_views, campaign_views, fraud_views, stats_views, ticket_views

    console = web.Application(middlewares=[console_middleware])
    console.router.add_static("/static", STATIC)
    for module in (auth_views, ticket_views, campaign_views, stats_views, fraud_views, admin_views):
        console.add_routes(module.routes)
    return console
