"""The shared ticket store: every table of the gateway, one code path for SQLite and PostgreSQL.

Times are stored timezone-aware (UTC); SQLite hands them back naive, so readers go through
`gateway.clock.as_utc`. Status and kind columns are short strings whose allowed values are the
constants below; the rules that move them live in the domain packages.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Text,
    UniqueConstraint,
    literal_column,
    text,
)
from sqlmodel import Field, SQLModel

ORG_KINDS = ("operator", "city_bureau", "county_dept", "unit", "platform_builder")
APPROVAL_KINDS = ("city_bureau", "county_dept")
SERVICE_CHANNELS = ("window", "online", "self_service", "app")
# Where an evaluation came from (Art. 9-10); upload codes are mapped at the export edge.
EVALUATION_CHANNELS = ("web", "qr", "sms", "bot", "evaluator", "department", "phone", "app")


def _ts(**kw: Any) -> Any:
    return Field(sa_type=DateTime(timezone=True), **kw)


class Organisation(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=64, unique=True, index=True)
    name: str = Field(max_length=200)
    kind: str = Field(max_length=32)
    region_code: str = Field(max_length=12, index=True)
    parent_id: int | None = Field(default=None, foreign_key="organisation.id")
    created_at: datetime = _ts()


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_key"
    id: int | None = Field(default=None, primary_key=True)
    org_id: int = Field(foreign_key="organisation.id", index=True)
    prefix: str = Field(max_length=16, unique=True)
    key_hash: str = Field(max_length=64)
    label: str = Field(default="", max_length=200)
    created_at: datetime = _ts()
    revoked_at: datetime | None = _ts(default=None)


class Citizen(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    phone_hash: str | None = Field(default=None, max_length=64, unique=True)
    phone_enc: str | None = Field(default=None, sa_type=Text)
    phone_masked: str | None = Field(default=None, max_length=20)
    telegram_chat_id: int | None = Field(default=None, sa_type=BigInteger, unique=True)
    name_enc: str | None = Field(default=None, sa_type=Text)
    sms_opted_out_at: datetime | None = _ts(default=None)
    bot_blocked_at: datetime | None = _ts(default=None)
    created_at: datetime = _ts()


class Invitation(SQLModel, table=True):
    """What the citizen is asked to rate: one case, a batch (Art. 11: one rating for all), or a theme."""

    __table_args__ = (UniqueConstraint("org_id", "kind", "group_no", name="uq_invitation_group"),)
    id: int | None = Field(default=None, primary_key=True)
    token: str = Field(max_length=16, unique=True, index=True)
    org_id: int = Field(foreign_key="organisation.id", index=True)  # the unit; a theme's: the approval department
    citizen_id: int | None = Field(default=None, foreign_key="citizen.id", index=True)
    kind: str = Field(max_length=16)  # single | batch | theme
    group_no: str = Field(max_length=64)  # case_no, batch_no or theme_no
    region_code: str = Field(max_length=12)
    item_name: str = Field(max_length=200)
    office_name: str = Field(max_length=200)
    service_channel: str = Field(max_length=16)
    completed_at: datetime = _ts()
    expires_at: datetime = _ts()
    expires_provisional: bool = False
    status: str = Field(default="open", max_length=16)  # open | rated | partly_rated
    rated_at: datetime | None = _ts(default=None)
    created_at: datetime = _ts()


class ServiceCase(SQLModel, table=True):
    """A finished service case (办件) reported by a department system."""

    __tablename__ = "service_case"
    __table_args__ = (UniqueConstraint("org_id", "case_no", name="uq_case_org_case_no"),)
    id: int | None = Field(default=None, primary_key=True)
    org_id: int = Field(foreign_key="organisation.id")
    reporter_org_id: int = Field(foreign_key="organisation.id")
    case_no: str = Field(max_length=64)
    item_code: str = Field(max_length=64)
    item_name: str = Field(max_length=200)
    region_code: str = Field(max_length=12, index=True)
    staff_id: str | None = Field(default=None, max_length=64)
    service_channel: str = Field(max_length=16)
    completed_at: datetime = _ts()
    batch_no: str | None = Field(default=None, max_length=64)
    theme_no: str | None = Field(default=None, max_length=64)
    invitation_id: int = Field(foreign_key="invitation.id", index=True)
    request_hash: str = Field(max_length=64)
    created_at: datetime = _ts()


class Evaluation(SQLModel, table=True):
    """A rating as given. Never updated or deleted: later facts are new rows (addenda, decisions)."""

    __table_args__ = (UniqueConstraint("invitation_id", "scope", name="uq_evaluation_scope"),)
    id: int | None = Field(default=None, primary_key=True)
    invitation_id: int = Field(foreign_key="invitation.id", index=True)
    case_id: int | None = Field(default=None, foreign_key="service_case.id")
    scope: str = Field(max_length=32)  # "all" or "case:<id>" (a theme rated item by item)
    citizen_id: int | None = Field(default=None, foreign_key="citizen.id", index=True)
    level: int
    reason_codes: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    content: str = Field(default="", sa_type=Text)
    staff_id: str | None = Field(default=None, max_length=64)
    staff_level: int | None = None
    channel: str = Field(max_length=16)
    submitted_by_org_id: int | None = Field(default=None, foreign_key="organisation.id")
    created_at: datetime = _ts(index=True)


class EvaluationAddendum(SQLModel, table=True):
    """Content given after the rating (reasons asked for in the conversation, a staff rating)."""

    __tablename__ = "evaluation_addendum"
    id: int | None = Field(default=None, primary_key=True)
    evaluation_id: int = Field(foreign_key="evaluation.id", index=True)
    kind: str = Field(max_length=16)  # reasons | staff
    reason_codes: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    content: str = Field(default="", sa_type=Text)
    staff_level: int | None = None
    channel: str = Field(max_length=16)
    created_at: datetime = _ts()


class EvaluationDecision(SQLModel, table=True):
    """A later ruling on how an evaluation counts (an appeal found it invalid or malicious)."""

    __tablename__ = "evaluation_decision"
    id: int | None = Field(default=None, primary_key=True)
    evaluation_id: int = Field(foreign_key="evaluation.id", index=True)
    ticket_id: int | None = Field(default=None, foreign_key="ticket.id")
    decision: str = Field(max_length=16)  # invalid | malicious
    org_id: int = Field(foreign_key="organisation.id")
    note: str = Field(default="", sa_type=Text)
    created_at: datetime = _ts()


class Ticket(SQLModel, table=True):
    """A bad-review work order (差评工单). Only tickets.workflow.transition changes its status."""

    id: int | None = Field(default=None, primary_key=True)
    evaluation_id: int = Field(foreign_key="evaluation.id", unique=True)
    invitation_id: int = Field(foreign_key="invitation.id", index=True)
    case_id: int | None = Field(default=None, foreign_key="service_case.id")
    citizen_id: int | None = Field(default=None, foreign_key="citizen.id", index=True)
    region_code: str = Field(max_length=12, index=True)
    level: int
    responsibility: str = Field(max_length=16)  # handling | platform
    approval_org_id: int = Field(foreign_key="organisation.id", index=True)
    unit_org_id: int | None = Field(default=None, foreign_key="organisation.id", index=True)
    assignee_org_id: int = Field(foreign_key="organisation.id", index=True)
    status: str = Field(max_length=24, index=True)
    category: str = Field(default="general", max_length=16)  # general | simple
    received_at: datetime | None = _ts(default=None)
    due_at: datetime = _ts(index=True)
    due_provisional: bool = False
    extension_working_days: int = 0
    redo_count: int = 0
    consultation: bool = False
    reply_text: str = Field(default="", sa_type=Text)
    resolved_at: datetime | None = _ts(default=None)
    closed_at: datetime | None = _ts(default=None)
    overdue_since: datetime | None = _ts(default=None)
    last_reminded_on: date | None = None
    created_at: datetime = _ts(index=True)
    updated_at: datetime = _ts()
    version: int = 1


class TicketEvent(SQLModel, table=True):
    __tablename__ = "ticket_event"
    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    at: datetime = _ts()
    actor_org_id: int | None = Field(default=None, foreign_key="organisation.id")
    actor: str = Field(max_length=100)
    action: str = Field(max_length=32)
    from_status: str | None = Field(default=None, max_length=24)
    to_status: str = Field(max_length=24)
    note: str = Field(default="", sa_type=Text)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class OutboundMessage(SQLModel, table=True):
    """The outbox: a message is a row written in the transaction that caused it."""

    __tablename__ = "outbound_message"
    __table_args__ = (Index("ix_outbound_ready", "status", "priority", "next_attempt_at"),)
    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(max_length=16)  # sms | telegram | webhook
    citizen_id: int | None = Field(default=None, foreign_key="citizen.id", index=True)  # None: to a department
    purpose: str = Field(max_length=16)  # prompt | reply | survey | notice | reminder
    priority: int = 10  # lower goes first: answers to citizens (0) before bulk prompts (10)
    body: str = Field(sa_type=Text)
    buttons: list[Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    # status: queued | sending | sent | delivered | undelivered | failed | suppressed | cancelled
    status: str = Field(default="queued", max_length=16)
    not_before: datetime | None = _ts(default=None)
    next_attempt_at: datetime = _ts()
    lease_until: datetime | None = _ts(default=None)
    attempts: int = 0
    provider_message_id: str | None = Field(default=None, max_length=64, index=True)
    error_code: str | None = Field(default=None, max_length=32)
    last_error: str | None = Field(default=None, sa_type=Text)
    dedupe_key: str | None = Field(default=None, max_length=128, unique=True)
    invitation_id: int | None = Field(default=None, foreign_key="invitation.id")
    ticket_id: int | None = Field(default=None, foreign_key="ticket.id")
    campaign_id: int | None = Field(default=None, index=True)
    reply_to_chat_message_id: int | None = Field(default=None, sa_type=BigInteger)
    created_at: datetime = _ts()
    sent_at: datetime | None = _ts(default=None)
    updated_at: datetime = _ts()


class DeliveryAttempt(SQLModel, table=True):
    __tablename__ = "delivery_attempt"
    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(foreign_key="outbound_message.id", index=True)
    at: datetime = _ts()
    outcome: str = Field(max_length=16)  # sent | retry | failed | suppressed
    error_code: str | None = Field(default=None, max_length=32)
    detail: str = Field(default="", sa_type=Text)


# The SMS inbox's states. A stored reply is `pending` (leased while a drainer runs it) until the
# conversation's transaction marks it `processed`; after `GATEWAY_INBOX_MAX_ATTEMPTS` failed tries it is
# `dead` (set aside, text and number kept for an operator) until `gateway inbox retry` makes it pending
# again or `gateway inbox purge` clears them (`purged`).
INBOX_STATES = ("pending", "processed", "dead", "purged")
# The claim reads pending messages per sender in order; these partial indexes stay as small as the backlog.
INBOX_PENDING = "state = 'pending'"
INBOX_DEAD = "state = 'dead'"


def inbox_state_is(column: Any, state: str) -> Any:
    """`column = '<state>'` with the value written into the SQL, not bound: PostgreSQL's planner then
    matches it to the partial indexes on the state, in a prepared statement's generic plan too."""
    if state not in INBOX_STATES:
        raise ValueError(f"no inbox state {state!r}")
    return column == literal_column(f"'{state}'")


class InboundMessage(SQLModel, table=True):
    """The SMS inbox: every reply Twilio delivered, by MessageSid (a retried webhook is stored once).

    The webhook stores the message (sender encrypted, its keyed hash, the text) and answers; a drainer
    processes it later and, in the same transaction as its effects, marks it `processed` and clears the
    text and the number. `state` says where a message is (`INBOX_STATES`); no other column implies it.
    The bot's updates are not here: their ledger is `BotUpdate`.
    """

    __tablename__ = "inbound_message"
    __table_args__ = (
        UniqueConstraint("provider", "provider_id", name="uq_inbound_provider_id"),
        # The claim walks pending messages in order (ix_inbound_pending_id) and checks each sender for an
        # earlier one (ix_inbound_pending): both stay as small as the backlog, however many were processed.
        Index("ix_inbound_pending_id", "id", sqlite_where=text(INBOX_PENDING), postgresql_where=text(INBOX_PENDING)),
        Index(
            "ix_inbound_pending",
            "sender_hash",
            "id",
            sqlite_where=text(INBOX_PENDING),
            postgresql_where=text(INBOX_PENDING),
        ),
        Index("ix_inbound_dead", "id", sqlite_where=text(INBOX_DEAD), postgresql_where=text(INBOX_DEAD)),
        CheckConstraint(
            "state IN (" + ", ".join(f"'{s}'" for s in INBOX_STATES) + ")", name="ck_inbound_message_state"
        ),
    )
    id: int | None = Field(default=None, primary_key=True)
    provider: str = Field(max_length=16)
    provider_id: str = Field(max_length=64)
    citizen_id: int | None = Field(default=None, foreign_key="citizen.id")
    received_at: datetime = _ts()
    state: str = Field(default="pending", max_length=16, sa_column_kwargs={"server_default": "pending"})
    # Empty only for replies stored before the inbox existed (processed when they came).
    sender_hash: str | None = Field(default=None, max_length=64)
    sender_enc: str | None = Field(default=None, sa_type=Text)
    body: str | None = Field(default=None, sa_type=Text)
    processed_at: datetime | None = _ts(default=None)  # processed, or set aside
    lease_until: datetime | None = _ts(default=None)
    attempts: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    error: str | None = Field(default=None, max_length=200)


class BotUpdate(SQLModel, table=True):
    """The Telegram updates the bot has acted on, by `update_id`: recorded in the transaction of the
    update's effects, so a re-delivered update finds its row and does nothing (the bot's dedup ledger)."""

    __tablename__ = "bot_update"
    update_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    citizen_id: int | None = Field(default=None, foreign_key="citizen.id")
    processed_at: datetime = _ts()


class ConversationTimer(SQLModel, table=True):
    """A pending conversation timer (the one reminder for missing reasons)."""

    __tablename__ = "conversation_timer"
    __table_args__ = (UniqueConstraint("channel", "citizen_id", name="uq_timer_channel_citizen"),)
    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(max_length=16)
    citizen_id: int = Field(foreign_key="citizen.id")
    due_at: datetime = _ts(index=True)


class ContactAccess(SQLModel, table=True):
    """Each time a unit reads an evaluator's full number to contact them (Art. 16(四))."""

    __tablename__ = "contact_access"
    id: int | None = Field(default=None, primary_key=True)
    org_id: int = Field(foreign_key="organisation.id")
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    citizen_id: int = Field(foreign_key="citizen.id")
    at: datetime = _ts()


class Campaign(SQLModel, table=True):
    """A callback-survey campaign (回访, Art. 15(五))."""

    id: int | None = Field(default=None, primary_key=True)
    org_id: int = Field(foreign_key="organisation.id", index=True)
    name: str = Field(default="", max_length=200)
    filters: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(default="scheduled", max_length=16)  # scheduled | running | paused | cancelled | finished
    starts_at: datetime = _ts()
    created_at: datetime = _ts()
    finished_at: datetime | None = _ts(default=None)


# A target in one of these statuses holds its ticket's callback for the round: no other campaign takes it.
OPEN_TARGET_STATUSES = ("pending", "queued", "sent", "delivered")
_OPEN_TARGET = text("status IN ('pending', 'queued', 'sent', 'delivered')")


class CampaignTarget(SQLModel, table=True):
    __tablename__ = "campaign_target"
    __table_args__ = (
        UniqueConstraint("campaign_id", "ticket_id", name="uq_target_campaign_ticket"),
        Index("ix_target_campaign_status", "campaign_id", "status"),
        # One open callback question per ticket and round across campaigns (Art. 15(五)): a second
        # campaign started at the same moment skips the ticket instead of asking twice.
        Index(
            "uq_target_open_round",
            "ticket_id",
            "round",
            unique=True,
            sqlite_where=_OPEN_TARGET,
            postgresql_where=_OPEN_TARGET,
        ),
    )
    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id")
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    # The ticket's rectification round surveyed: 1, or 2 after the one redo (ticket.redo_count + 1).
    round: int = Field(default=1, sa_column_kwargs={"server_default": "1"})
    citizen_id: int | None = Field(default=None, foreign_key="citizen.id", index=True)
    channel: str | None = Field(default=None, max_length=16)
    # pending | queued | sent | delivered | failed | satisfied | unsatisfied | no_answer | skipped
    status: str = Field(default="pending", max_length=16)
    message_id: int | None = Field(default=None, foreign_key="outbound_message.id")
    answered_at: datetime | None = _ts(default=None)
    answer_channel: str | None = Field(default=None, max_length=16)
    answer_text: str = Field(default="", sa_type=Text)
    created_at: datetime = _ts()


class FraudFlag(SQLModel, table=True):
    """A suspicion for a human to rule (Art. 19): the rule, its evidence and (in fraud_flag_evaluation) the
    evaluations involved. A flag never changes, hides or deletes a rating; only a confirmed ruling on a
    good review adds an evaluation_decision (gateway.fraud)."""

    __tablename__ = "fraud_flag"
    __table_args__ = (Index("ix_fraud_flag_region_status", "region_code", "status"),)
    id: int | None = Field(default=None, primary_key=True)
    rule: str = Field(max_length=32, index=True)
    subject: str = Field(max_length=128)  # what the rule fired on: "citizen 12", "staff hanbin-market/HB-017", …
    region_code: str = Field(max_length=12)  # the jurisdiction: the evaluations' common region
    evidence: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    evaluation_count: int = 0
    status: str = Field(default="open", max_length=16)  # open | confirmed | dismissed
    created_at: datetime = _ts()
    ruled_at: datetime | None = _ts(default=None)
    ruled_by_org_id: int | None = Field(default=None, foreign_key="organisation.id")
    ruling_note: str = Field(default="", sa_type=Text)


# Tables kept in their own packages, registered here so the metadata (and Alembic) sees every table.
# The statistics' roll-ups and alerts.
import gateway.stats.models  # noqa: E402,F401

# The console's tables (accounts, sessions, audit) live with the console; registered here with the metadata.
from gateway.console import models as _console_models  # noqa: E402,F401
from gateway.upload.models import UploadRecord  # noqa: E402,F401
