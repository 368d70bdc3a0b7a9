"""Console tables: people's accounts, their server-side sessions, and the audit trail of the console."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index
from sqlmodel import Field, SQLModel

ROLES = ("clerk", "supervisor", "admin")  # admin: the platform operator's staff only


def _ts(**kw: Any) -> Any:
    return Field(sa_type=DateTime(timezone=True), **kw)


class ConsoleUser(SQLModel, table=True):
    """A person who signs in to the console; jurisdiction and permissions are their organisation's."""

    __tablename__ = "console_user"
    id: int | None = Field(default=None, primary_key=True)
    org_id: int = Field(foreign_key="organisation.id", index=True)
    login: str = Field(max_length=64, unique=True, index=True)
    role: str = Field(max_length=16)
    password_hash: str | None = Field(default=None, max_length=200)  # argon2id; None until first set
    setup_token_hash: str | None = Field(default=None, max_length=64, index=True)
    setup_expires_at: datetime | None = _ts(default=None)
    disabled_at: datetime | None = _ts(default=None)
    created_at: datetime = _ts()
    password_changed_at: datetime | None = _ts(default=None)


class ConsoleSession(SQLModel, table=True):
    """A signed-in session on the embedded default (with Redis configured, sessions live in Redis)."""

    __tablename__ = "console_session"
    id: str = Field(primary_key=True, max_length=64)  # sha256 of the cookie value: a stolen table opens nothing
    user_id: int = Field(foreign_key="console_user.id", index=True)
    csrf: str = Field(max_length=64)
    created_at: datetime = _ts()
    last_seen_at: datetime = _ts()


class ConsoleAudit(SQLModel, table=True):
    """Sign-ins, failures, sign-outs, number reveals and actions taken in the console (who, when, from where)."""

    __tablename__ = "console_audit"
    __table_args__ = (
        Index("ix_console_audit_kind_login_at", "kind", "login", "at"),
        Index("ix_console_audit_kind_address_at", "kind", "address", "at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _ts(index=True)
    kind: str = Field(max_length=32)
    user_id: int | None = Field(default=None, foreign_key="console_user.id", index=True)
    org_id: int | None = Field(default=None, foreign_key="organisation.id", index=True)
    login: str = Field(default="", max_length=64)  # as typed, for failures of unknown names
    address: str = Field(default="", max_length=64)
    ticket_id: int | None = Field(default=None, foreign_key="ticket.id", index=True)
    event_id: int | None = Field(default=None, foreign_key="ticket_event.id")
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
