"""People's accounts: adding, the one-time set-up link, passwords (argon2id), disabling, resetting."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime, timedelta
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.clock import as_utc
from gateway.console.models import ROLES, ConsoleUser
from gateway.errors import BrokenInvariant, DomainError
from gateway.orgs import org_by_code
from gateway.store.models import Organisation

LOGIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{1,63}$")
SETUP_LINK_HOURS = 72
MIN_PASSWORD = 10
MAX_PASSWORD = 128

# argon2id with the library's defaults (RFC 9106's second recommended option: 64 MiB, 3 passes).
_HASHER = PasswordHasher()


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """Verified against when the name is unknown, so a wrong name takes as long as a wrong password."""
    return _HASHER.hash("not a password of anyone")


class AccountError(DomainError):
    """An account cannot be created or changed as asked; `message` is Chinese, for the person."""

    status = 422


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _new_setup_token(user: ConsoleUser, at: datetime) -> str:
    token = secrets.token_urlsafe(24)
    user.setup_token_hash = token_hash(token)
    user.setup_expires_at = at + timedelta(hours=SETUP_LINK_HOURS)
    return token


async def add_user(
    session: AsyncSession, *, org_code: str, login: str, role: str, at: datetime
) -> tuple[ConsoleUser, str]:
    """Create an account with a one-time set-up token (returned once; stored only hashed)."""
    if not LOGIN.match(login):
        raise AccountError("登录名为 2-64 个字母、数字或 . _ @ -，以字母或数字开头", field="login")
    if role not in ROLES:
        raise AccountError(f"角色须为 {'、'.join(ROLES)} 之一", field="role")
    org = await org_by_code(session, org_code)
    if org is None:
        raise AccountError(f"单位 {org_code} 未登记", field="org")
    if role == "admin" and org.kind != "operator":
        raise AccountError("管理员（admin）只能属于平台运营方", field="role")
    if await user_by_login(session, login) is not None:
        raise AccountError(f"登录名 {login} 已被使用", field="login")
    if not (org.id is not None):
        raise BrokenInvariant("org.id is not None")
    user = ConsoleUser(org_id=org.id, login=login, role=role, created_at=at)
    token = _new_setup_token(user, at)
    session.add(user)
    await session.flush()
    return user, token


async def user_by_login(session: AsyncSession, login: str) -> ConsoleUser | None:
    return (await session.exec(select(ConsoleUser).where(ConsoleUser.login == login))).first()


async def user_by_setup_token(session: AsyncSession, token: str, at: datetime) -> ConsoleUser | None:
    """The account a set-up link belongs to, while the link is valid and the account enabled."""
    if not 16 <= len(token) <= 64:
        return None
    hashed = token_hash(token)
    user = (await session.exec(select(ConsoleUser).where(ConsoleUser.setup_token_hash == hashed))).first()
    if user is None or user.disabled_at is not None or user.setup_expires_at is None:
        return None
    if not hmac.compare_digest(user.setup_token_hash or "", hashed) or as_utc(user.setup_expires_at) <= at:
        return None
    return user


def check_new_password(password: str, login: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"密码至少 {MIN_PASSWORD} 个字符", field="password")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"密码最多 {MAX_PASSWORD} 个字符", field="password")
    if password.lower() == login.lower():
        raise AccountError("密码不能与登录名相同", field="password")


def set_password(user: ConsoleUser, password: str, at: datetime) -> None:
    """Store a new password (hashed) and use up any set-up link."""
    check_new_password(password, user.login)
    user.password_hash = _HASHER.hash(password)
    user.password_changed_at = at
    user.setup_token_hash = None
    user.setup_expires_at = None


def verify_password(user: ConsoleUser | None, password: str) -> bool:
    """Whether the password is the account's; runs a full hash check even without an account."""
    stored = user.password_hash if user is not None and user.password_hash else None
    try:
        _HASHER.verify(stored or _dummy_hash(), password[: MAX_PASSWORD * 4])
    except (VerificationError, InvalidHashError):
        return False
    if stored is None or user is None:
        return False
    if _HASHER.check_needs_rehash(stored):
        user.password_hash = _HASHER.hash(password)
    return True


def change_password(user: ConsoleUser, *, current: str, new: str, at: datetime) -> None:
    if not verify_password(user, current):
        raise AccountError("当前密码不正确", field="current")
    set_password(user, new, at)


async def disable_user(session: AsyncSession, *, login: str, at: datetime) -> ConsoleUser:
    user = await user_by_login(session, login)
    if user is None:
        raise AccountError(f"没有登录名为 {login} 的账号", field="login")
    if user.disabled_at is None:
        user.disabled_at = at
    user.setup_token_hash = None
    return user


async def enable_user(session: AsyncSession, *, login: str) -> ConsoleUser:
    user = await user_by_login(session, login)
    if user is None:
        raise AccountError(f"没有登录名为 {login} 的账号", field="login")
    user.disabled_at = None
    return user


async def reset_user(session: AsyncSession, *, login: str, at: datetime) -> tuple[ConsoleUser, str]:
    """Forget the password and issue a new set-up link (the caller ends the account's sessions)."""
    user = await user_by_login(session, login)
    if user is None:
        raise AccountError(f"没有登录名为 {login} 的账号", field="login")
    if user.disabled_at is not None:
        raise AccountError(f"账号 {login} 已停用，请先启用", field="login")
    user.password_hash = None
    token = _new_setup_token(user, at)
    return user, token


async def list_users(session: AsyncSession) -> list[tuple[ConsoleUser, Organisation]]:
    rows = await session.exec(
        select(ConsoleUser, Organisation)
        .join(Organisation, col(Organisation.id) == ConsoleUser.org_id)
        .order_by(col(Organisation.code), col(ConsoleUser.login))
    )
    return list(rows.all())


def setup_link(public_url: str, token: str) -> str:
    return f"{public_url}/console/setup/{token}"
