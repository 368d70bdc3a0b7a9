"""The conversation runner shared by the SMS inbox and the bot (STYLE 3).

For one input it: takes the sender's lock, loads the state and the Context (from the ticket store),
calls the pure `conversations.advance`, then in ONE transaction records the input as handled (the
SMS inbox row's "processed" state, the bot's update id in `bot_update`, or the timer's removal: the dedup), carries
out the effects and queues the replies in the outbox; after the commit it saves the state.
A crash before the commit leaves nothing; a crash after it leaves an older state, which the Context
(the truth) corrects on the next message. `converse_group` does the same for several citizens' inputs
in one transaction (the SMS inbox's groups), all or nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import chain
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, delete, func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from conversations import (
    AttachReasons,
    AttachSurveyReason,
    CancelTimer,
    Context,
    Inbound,
    InvitationRef,
    OptIn,
    OptOut,
    RatedInvitation,
    RecordRating,
    RecordStaffRating,
    RecordSurveyAnswer,
    Reply,
    ScheduleTimer,
    StateStore,
    SurveyRef,
    Transition,
    advance,
    button_label,
    plain_text,
    sender_key,
    state_key,
)
from gateway.clock import as_utc
from gateway.deps import Deps
from gateway.errors import BrokenInvariant
from gateway.evaluations.errors import EvaluationError
from gateway.evaluations.service import RatingGroup, add_reasons, add_staff_rating, record_rating
from gateway.messaging.outbox import (
    OPT_OUT_CONFIRMATION,
    enqueue,
    gateway_confirms_opt_out,
    record_opt_in,
    record_opt_out,
)
from gateway.messaging.segments import first_fitting, segments
from gateway.store.db import Store
from gateway.store.models import (
    BotUpdate,
    CampaignTarget,
    Citizen,
    ConversationTimer,
    Evaluation,
    EvaluationAddendum,
    InboundMessage,
    Invitation,
    OutboundMessage,
    ServiceCase,
    Ticket,
    inbox_state_is,
)
from gateway.store.redis_watch import RedisWatch, is_outage
from gateway.store.sets import in_set
from gateway.store.upsert import insert_if_absent

log = logging.getLogger(__name__)

# Bad ratings this recent without reasons still take late reasons (Art. 8), even if the state is gone.
LATE_REASONS_WINDOW = timedelta(hours=48)
OPEN_SURVEY_STATUSES = ("queued", "sent", "delivered")
EVALUATION_CHANNEL = {"sms": "sms", "telegram": "bot"}


CITIZEN_IDS_KEPT = 10_000


class Locks(Protocol):
    def hold(self, key: str) -> Any: ...

    def hold_all_or_none(self, keys: Sequence[str]) -> Any: ...


class SurveyAnswers(Protocol):
    """Where callback-survey answers go (gateway.callbacks); injected to keep the import direction."""

    async def answer(
        self, session: AsyncSession, *, ticket_id: int, citizen_id: int, satisfied: bool, channel: str, deps: Deps
    ) -> None: ...

    async def reason(
        self, session: AsyncSession, *, ticket_id: int, citizen_id: int, text: str, channel: str, deps: Deps
    ) -> None: ...


@dataclass
class Runner:
    store: Store
    states: StateStore
    locks: Locks
    deps: Deps
    surveys: SurveyAnswers | None = None
    # With Redis state: its reachability, shared by the inbox drainer, the timers and the bot webhook.
    redis_watch: RedisWatch | None = None
    # sender hash -> citizen id; the mapping never changes once made, so it can be cached. Bounded: a
    # sender not in it costs a share of one query per inbox claim, while each entry costs about 200
    # bytes (100,000 of them made a worker 22 MB larger over a 100,000-reply backlog).
    citizen_ids: dict[str, int] = field(default_factory=dict)

    def remember(self, sender_hash: str, citizen_id: int) -> None:
        if len(self.citizen_ids) >= CITIZEN_IDS_KEPT:
            self.citizen_ids.pop(next(iter(self.citizen_ids)))
        self.citizen_ids[sender_hash] = citizen_id


@dataclass
class Outcome:
    duplicate: bool = False
    transition: Transition | None = None
    replies: list[OutboundMessage] = field(default_factory=list)


def conversation_key(deps: Deps, channel: str, citizen_id: int) -> str:
    """The state key of a citizen's conversation on a channel (a keyed hash, never a number)."""
    return state_key(channel, sender_key(deps.settings.effective_secret, channel, f"citizen:{citizen_id}"))


async def converse(
    runner: Runner,
    *,
    channel: str,
    citizen_id: int,
    inbound: Inbound,
    update_id: int | None = None,
    source_message_id: int | None = None,
    timer_id: int | None = None,
    inbox_id: int | None = None,
) -> Outcome:
    """Run one input through the conversation; see the module docstring for the guarantees."""
    key = conversation_key(runner.deps, channel, citizen_id)
    async with runner.locks.hold(key):
        state = await runner.states.get(key)
        try:
            async with runner.store.transaction() as session:
                outcome = await _step(
                    session,
                    runner,
                    state,
                    channel=channel,
                    citizen_id=citizen_id,
                    inbound=inbound,
                    update_id=update_id,
                    source_message_id=source_message_id,
                    timer_id=timer_id,
                    inbox_id=inbox_id,
                )
            if outcome.duplicate:
                return outcome
        except EvaluationError as exc:
            # A rating raced with another channel (or the period ended meanwhile): nothing of the
            # first attempt stays; the citizen gets a plain answer and the conversation starts over.
            log.info("conversation effect refused", extra={"reason": exc.message, "channel": channel})
            async with runner.store.transaction() as session:
                if not await _first_time(session, update_id, citizen_id, None, inbox_id, runner.deps):
                    return Outcome(duplicate=True)
                citizen = await session.get(Citizen, citizen_id)
                if citizen is None:
                    raise BrokenInvariant("citizen is missing") from exc
                transition = Transition(state={}, replies=(Reply(_refusal(exc)),))
                replies = await _queue_replies(
                    session, runner.deps, transition.replies, citizen, channel, source_message_id
                )
            outcome = Outcome(transition=transition, replies=replies)
        if outcome.transition is None:
            raise BrokenInvariant("a handled input has no transition")
        await runner.states.save_many([(key, outcome.transition.state, outcome.transition.ttl_seconds)])
    return outcome


@dataclass(frozen=True)
class GroupInput:
    """One citizen's input in a group (`converse_group`)."""

    citizen_id: int
    inbound: Inbound
    inbox_id: int | None = None


async def converse_group(runner: Runner, *, channel: str, inputs: Sequence[GroupInput]) -> list[Outcome] | None:
    """Several citizens' inputs in ONE transaction, with the guarantees of `converse` for the group as a
    whole: their locks are taken together, their states read and saved in one exchange with the store,
    and what they change commits (or not) together, so a group costs one BEGIN, one COMMIT, one append
    to the evaluation log and one upsert per roll-up table instead of one of each per input.

    None when the group cannot go through as one, with nothing of it done: a citizen's conversation is
    busy elsewhere (a timer, the bot), a citizen appears twice, or an effect was refused (a rating that
    raced with another channel). The caller then runs each input with `converse`, which waits for its
    lock and answers a refusal on its own."""
    keys = [conversation_key(runner.deps, channel, item.citizen_id) for item in inputs]
    if len(set(keys)) != len(keys):
        return None
    async with runner.locks.hold_all_or_none(keys) as held:
        if not held:
            return None
        states = await runner.states.get_many(keys)
        try:
            async with runner.store.transaction() as session:
                fresh = await _mark_processed(
                    session, [i.inbox_id for i in inputs if i.inbox_id is not None], runner.deps
                )
                known = await _read_group(session, runner.deps, channel, [item.citizen_id for item in inputs])
                replies: list[OutboundMessage] = []
                ratings = RatingGroup(at=runner.deps.clock.now())
                timers = TimerChanges(channel)
                outcomes = [
                    await _step(
                        session,
                        runner,
                        state,
                        channel=channel,
                        citizen_id=item.citizen_id,
                        inbound=item.inbound,
                        known=known[item.citizen_id],
                        deferred=replies,
                        ratings=ratings,
                        timers=timers,
                    )
                    if item.inbox_id is None or item.inbox_id in fresh
                    else Outcome(duplicate=True)
                    for item, state in zip(inputs, states, strict=True)
                ]
                await ratings.write(session, runner.deps)  # the group's ratings and reasons, written together
                await timers.write(session)  # the group's timers: one DELETE, one INSERT
                session.add_all(replies)  # the group's answers: one INSERT
                await session.flush()
        except EvaluationError as exc:
            log.info("a conversation in a group was refused; each goes alone", extra={"reason": exc.message})
            return None
        await runner.states.save_many(
            [
                (key, outcome.transition.state, outcome.transition.ttl_seconds)
                for key, outcome in zip(keys, outcomes, strict=True)
                if outcome.transition is not None
            ]
        )
    return outcomes


@dataclass
class _Known:
    """What a group reads for each of its citizens in one set of queries, before their steps."""

    citizen: Citizen
    context: Context
    invitations: dict[int, Invitation]
    sms_answers_sent: int | None
    cases: dict[int, list[ServiceCase]]  # of the open and the recently rated invitations, by invitation id
    rated: dict[int, tuple[Evaluation, Invitation]]  # recent ratings, by invitation id


async def _read_group(session: AsyncSession, deps: Deps, channel: str, citizen_ids: list[int]) -> dict[int, _Known]:
    citizens = {c.id: c for c in (await session.exec(_CITIZENS_BY_ID, params={"cs": citizen_ids})).all()}
    contexts = await load_contexts(session, citizen_ids=citizen_ids, deps=deps)
    sent = await _sms_answers_sent(session, citizen_ids, deps.clock.now()) if channel == "sms" else None
    invitation_ids = [i for read in contexts.values() for i in (*read.invitations, *read.rated)]
    cases: dict[int, list[ServiceCase]] = {i: [] for i in invitation_ids}
    if invitation_ids:
        for case in (await session.exec(_CASES_OF_INVITATIONS, params={"ids": invitation_ids})).all():
            cases[case.invitation_id].append(case)
    known: dict[int, _Known] = {}
    for citizen_id in citizen_ids:
        citizen = citizens.get(citizen_id)
        if citizen is None:
            raise BrokenInvariant("citizen is missing")
        read = contexts[citizen_id]
        known[citizen_id] = _Known(
            citizen,
            read.context,
            read.invitations,
            None if sent is None else sent.get(citizen_id, 0),
            {i: cases[i] for i in (*read.invitations, *read.rated)},
            read.rated,
        )
    return known


async def _step(
    session: AsyncSession,
    runner: Runner,
    state: dict[str, Any] | None,
    *,
    channel: str,
    citizen_id: int,
    inbound: Inbound,
    update_id: int | None = None,
    source_message_id: int | None = None,
    timer_id: int | None = None,
    inbox_id: int | None = None,
    known: _Known | None = None,
    deferred: list[OutboundMessage] | None = None,
    ratings: RatingGroup | None = None,
    timers: TimerChanges | None = None,
) -> Outcome:
    """One input inside the caller's transaction: the dedup, the context (read here, or by the group
    with `known`), the flow, the effects, the replies."""
    if not await _first_time(session, update_id, citizen_id, timer_id, inbox_id, runner.deps):
        return Outcome(duplicate=True)
    cases = rated = None
    if known is None:
        ctx, invitations = await load_context(session, citizen_id=citizen_id, deps=runner.deps)
        citizen = await session.get(Citizen, citizen_id)
        if citizen is None:
            raise BrokenInvariant("citizen is missing")
        sent = None
    else:
        ctx, invitations, citizen, sent = known.context, known.invitations, known.citizen, known.sms_answers_sent
        cases, rated = known.cases, known.rated
    transition = advance(state, inbound, ctx)
    await _apply(session, runner, transition, citizen, channel, invitations, cases, rated, ratings, timers)
    opted_out = any(isinstance(effect, OptOut) for effect in transition.effects)
    replies = await _queue_replies(
        session,
        runner.deps,
        transition.replies,
        citizen,
        channel,
        source_message_id,
        opted_out=opted_out,
        sms_answers_sent=sent,
        deferred=deferred,
    )
    return Outcome(transition=transition, replies=replies)


def _refusal(exc: EvaluationError) -> str:
    from gateway.evaluations.errors import AlreadyRated, InvitationExpired

    if isinstance(exc, AlreadyRated):
        return "该服务已评价过，每项服务只能评价一次。感谢您的参与。"
    if isinstance(exc, InvitationExpired):
        return "该服务的评价期（办结后7个工作日）已结束。"
    return "暂时无法记录，请稍后再试或点击短信中的链接评价。"


# The statements of every message's path, built once: building a query anew for each message cost
# more of a reply's CPU than running it (bound values are passed at execution).
_INBOX = InboundMessage.__table__  # type: ignore[attr-defined]  # a Core UPDATE: no ORM bookkeeping
_INBOX_PROCESSED = (
    update(_INBOX)
    .where(_INBOX.c.id == bindparam("inbox_id"), inbox_state_is(_INBOX.c.state, "pending"))
    .values(
        state="processed",
        processed_at=bindparam("at"),
        citizen_id=bindparam("citizen"),
        body=None,
        sender_enc=None,
        lease_until=None,
        error=None,
    )
)
_CITIZENS = in_set(col(Invitation.citizen_id), "cs")
_OPEN_INVITATIONS = (
    select(Invitation)
    .where(_CITIZENS, Invitation.status == "open", col(Invitation.expires_at) > bindparam("now"))
    .order_by(col(Invitation.id))
)
_RECENT_RATINGS = (
    select(Evaluation, Invitation)
    .join(Invitation, col(Invitation.id) == Evaluation.invitation_id)
    .where(
        in_set(col(Evaluation.citizen_id), "cs"),
        col(Evaluation.created_at) > bindparam("since"),
        Evaluation.scope == "all",
    )
    .order_by(col(Evaluation.id))
)
_ADDENDA_OF = select(EvaluationAddendum.evaluation_id, EvaluationAddendum.kind).where(
    in_set(col(EvaluationAddendum.evaluation_id), "ids")
)
_OPEN_SURVEYS = (
    select(CampaignTarget.citizen_id, CampaignTarget.ticket_id, Invitation.item_name, OutboundMessage.sent_at)
    .join(OutboundMessage, col(OutboundMessage.id) == CampaignTarget.message_id)
    .join(Ticket, col(Ticket.id) == CampaignTarget.ticket_id)
    .join(Invitation, col(Invitation.id) == Ticket.invitation_id)
    .where(
        in_set(col(CampaignTarget.citizen_id), "cs"),
        col(CampaignTarget.status).in_(OPEN_SURVEY_STATUSES),
        col(OutboundMessage.sent_at).is_not(None),
    )
    .order_by(col(CampaignTarget.id))
)
_SMS_ANSWERS_SINCE = (
    select(OutboundMessage.citizen_id, func.count())
    .where(
        in_set(col(OutboundMessage.citizen_id), "cs"),
        OutboundMessage.purpose == "reply",
        OutboundMessage.channel == "sms",
        col(OutboundMessage.created_at) > bindparam("since"),
    )
    .group_by(col(OutboundMessage.citizen_id))
)
_CASES_OF_INVITATIONS = (
    select(ServiceCase).where(in_set(col(ServiceCase.invitation_id), "ids")).order_by(col(ServiceCase.id))
)
_CITIZENS_BY_ID = select(Citizen).where(in_set(col(Citizen.id), "cs"))


_GROUP_PROCESSED = (
    update(_INBOX)
    .where(in_set(_INBOX.c.id, "ids"), inbox_state_is(_INBOX.c.state, "pending"))
    .values(
        state="processed",
        processed_at=bindparam("at"),
        # The sender's citizen, as the drainer resolved it (the same keyed hash of the number).
        citizen_id=select(Citizen.id).where(Citizen.phone_hash == _INBOX.c.sender_hash).scalar_subquery(),
        body=None,
        sender_enc=None,
        lease_until=None,
        error=None,
    )
    .returning(_INBOX.c.id)
)


async def _mark_processed(session: AsyncSession, inbox_ids: list[int], deps: Deps) -> set[int]:
    """`_first_time` for a group's inbox messages in one statement: the ids that were still pending."""
    if not inbox_ids:
        return set()
    done = await session.exec(_GROUP_PROCESSED, params={"ids": inbox_ids, "at": deps.clock.now()})
    return set(done.scalars().all())


async def _first_time(
    session: AsyncSession,
    update_id: int | None,
    citizen_id: int,
    timer_id: int | None,
    inbox_id: int | None,
    deps: Deps,
) -> bool:
    """Mark the inbox message processed, or take the timer, or record the bot's update id; False when
    that was done before (a message or timer another process handled, a re-delivered update)."""
    if inbox_id is not None:
        # The stored text and number are not needed any more: what matters is in the effects.
        done = await session.exec(
            _INBOX_PROCESSED, params={"inbox_id": inbox_id, "at": deps.clock.now(), "citizen": citizen_id}
        )
        return done.rowcount == 1
    if timer_id is not None:
        gone = await session.exec(delete(ConversationTimer).where(col(ConversationTimer.id) == timer_id))
        return gone.rowcount == 1
    if update_id is None:
        return True
    return await insert_if_absent(
        session, BotUpdate, update_id=update_id, citizen_id=citizen_id, processed_at=deps.clock.now()
    )


def invitation_ref(invitation: Invitation, timezone: str) -> InvitationRef:
    """The flow's view of an invitation."""
    if invitation.id is None:
        raise BrokenInvariant("invitation.id is missing")
    return InvitationRef(
        id=invitation.id,
        item_name=invitation.item_name,
        office=invitation.office_name,
        completed_on=as_utc(invitation.completed_at).astimezone(ZoneInfo(timezone)).date(),
        window=invitation.service_channel == "window",
        sent_at=as_utc(invitation.created_at),
    )


def render_buttons(reply: Reply) -> list[list[dict[str, str]]] | None:
    """A reply's choices as outbox button rows for the bot, one per row."""
    return [[{"text": button_label(c, reply.multi_select), "data": c.data}] for c in reply.choices] or None


async def load_context(session: AsyncSession, *, citizen_id: int, deps: Deps) -> tuple[Context, dict[int, Invitation]]:
    """What the flow needs to know about this citizen, read fresh for every input; and the open
    invitations it read, which the effects use (the session's identity map holds rows only weakly)."""
    read = (await load_contexts(session, citizen_ids=[citizen_id], deps=deps))[citizen_id]
    return read.context, read.invitations


@dataclass
class ContextRead:
    """A citizen's Context and the rows it was read from that the effects use: the open invitations, and
    the recent ratings (scope all) by invitation id, with their invitations held."""

    context: Context
    invitations: dict[int, Invitation]
    rated: dict[int, tuple[Evaluation, Invitation]]


async def load_contexts(session: AsyncSession, *, citizen_ids: Sequence[int], deps: Deps) -> dict[int, ContextRead]:
    """`load_context` for several citizens at once: the same three or four queries, whatever their number."""
    now = deps.clock.now()
    ids = list(citizen_ids)

    def ref(inv: Invitation) -> InvitationRef:
        return invitation_ref(inv, deps.settings.timezone)

    open_rows: dict[int, list[Invitation]] = {c: [] for c in ids}
    for inv in (await session.exec(_OPEN_INVITATIONS, params={"cs": ids, "now": now})).all():
        if inv.citizen_id is not None:
            open_rows[inv.citizen_id].append(inv)

    recent = (await session.exec(_RECENT_RATINGS, params={"cs": ids, "since": now - LATE_REASONS_WINDOW})).all()
    awaiting_reasons: dict[int, list[RatedInvitation]] = {c: [] for c in ids}
    awaiting_staff: dict[int, list[InvitationRef]] = {c: [] for c in ids}
    rated: dict[int, dict[int, tuple[Evaluation, Invitation]]] = {c: {} for c in ids}
    if recent:
        addenda = (await session.exec(_ADDENDA_OF, params={"ids": [e.id for e, _ in recent]})).all()
        has = {(eid, kind) for eid, kind in addenda}
        for evaluation, inv in recent:
            rater = evaluation.citizen_id
            if rater is None:
                continue  # (not possible: selected by citizen)
            rated[rater][evaluation.invitation_id] = (evaluation, inv)
            if (
                evaluation.level <= 2
                and not evaluation.reason_codes
                and not evaluation.content
                and (evaluation.id, "reasons") not in has
            ):
                awaiting_reasons[rater].append(
                    RatedInvitation(ref(inv), evaluation.level, as_utc(evaluation.created_at))
                )
            if (
                inv.service_channel == "window"
                and evaluation.staff_level is None
                and (evaluation.id, "staff") not in has
            ):
                awaiting_staff[rater].append(ref(inv))

    # A callback question is open once its message has actually gone out, and it dates from then: a
    # campaign's targets are created long before their turn to be sent comes.
    surveys: dict[int, list[SurveyRef]] = {c: [] for c in ids}
    for citizen_id, ticket_id, name, sent_at in (await session.exec(_OPEN_SURVEYS, params={"cs": ids})).all():
        if sent_at is not None and citizen_id is not None:
            surveys[citizen_id].append(SurveyRef(ticket_id=ticket_id, item_name=name, sent_at=as_utc(sent_at)))
    reasons_by_level = {1: deps.catalogue.options(1), 2: deps.catalogue.options(2)}
    return {
        c: ContextRead(
            Context(
                open_invitations=tuple(ref(inv) for inv in open_rows[c]),
                reasons_by_level=reasons_by_level,
                open_surveys=tuple(surveys[c]),
                awaiting_reasons=tuple(awaiting_reasons[c]),
                awaiting_staff_rating=tuple(awaiting_staff[c]),
                reminder_after_seconds=deps.settings.reminder_after_seconds,
            ),
            {inv.id: inv for inv in open_rows[c] if inv.id is not None},
            rated[c],
        )
        for c in ids
    }


async def _evaluation_of(
    session: AsyncSession,
    invitation_id: int,
    citizen_id: int,
    rated: dict[int, tuple[Evaluation, Invitation]] | None = None,
) -> Evaluation | None:
    """The citizen's rating of the invitation (scope all): from the group's read when it has it."""
    if rated is not None and invitation_id in rated:
        return rated[invitation_id][0]
    return (
        await session.exec(
            select(Evaluation).where(
                Evaluation.invitation_id == invitation_id,
                Evaluation.citizen_id == citizen_id,
                Evaluation.scope == "all",
            )
        )
    ).first()


async def _apply(
    session: AsyncSession,
    runner: Runner,
    transition: Transition,
    citizen: Citizen,
    channel: str,
    invitations: dict[int, Invitation],
    cases: dict[int, list[ServiceCase]] | None = None,
    rated: dict[int, tuple[Evaluation, Invitation]] | None = None,
    ratings: RatingGroup | None = None,
    timers: TimerChanges | None = None,
) -> None:
    """The transition's effects, in order. With `ratings` and `timers` (a group), a rating whose
    evaluation no later effect of this transition needs joins the group's, and so do reasons no later
    effect could add to, and the timer changes: all are written when the group's steps are done."""
    deps, now = runner.deps, runner.deps.clock.now()
    changes = timers if timers is not None else TimerChanges(channel)
    rating_channel = EVALUATION_CHANNEL[channel]
    if citizen.id is None:
        raise BrokenInvariant("citizen.id is missing")
    for n, effect in enumerate(transition.effects):
        if isinstance(effect, RecordRating):
            invitation = invitations.get(effect.invitation_id) or await session.get(Invitation, effect.invitation_id)
            if invitation is None or invitation.citizen_id != citizen.id:
                raise EvaluationError("that service is not this citizen's")
            known_cases = (cases or {}).get(effect.invitation_id)
            if ratings is not None and known_cases and not _needs_evaluation(transition.effects[n + 1 :]):
                ratings.add(
                    invitation=invitation, level=effect.level, channel=rating_channel, deps=deps, cases=known_cases
                )
                continue
            await record_rating(
                session,
                invitation=invitation,
                level=effect.level,
                channel=rating_channel,
                deps=deps,
                require_content=False,
                cases=known_cases or None,  # read with the group's context
            )
        elif isinstance(effect, AttachReasons):
            evaluation = await _evaluation_of(session, effect.invitation_id, citizen.id, rated)
            if evaluation is not None and ratings is not None and not _needs_evaluation(transition.effects[n + 1 :]):
                ratings.reasons.add(
                    evaluation=evaluation, codes=list(effect.codes), text=effect.text, channel=rating_channel, deps=deps
                )
            elif evaluation is not None:
                await add_reasons(
                    session,
                    evaluation=evaluation,
                    codes=list(effect.codes),
                    text=effect.text,
                    channel=rating_channel,
                    deps=deps,
                )
        elif isinstance(effect, RecordStaffRating):
            evaluation = await _evaluation_of(session, effect.invitation_id, citizen.id, rated)
            if evaluation is not None and 1 <= effect.level <= 5:
                await add_staff_rating(
                    session, evaluation=evaluation, staff_level=effect.level, channel=rating_channel, deps=deps
                )
        elif isinstance(effect, OptOut):
            # "退订" means no more invitations: on the bot it also stops the SMS fallback, which the
            # blocked-bot rule would otherwise use (Messaging conduct: at once and for good).
            record_opt_out(citizen, channel="sms", at=now)
            if channel == "telegram":
                record_opt_out(citizen, channel="telegram", at=now)
            log.info("citizen opted out", extra={"citizen_id": citizen.id, "channel": channel})
        elif isinstance(effect, OptIn):
            record_opt_in(citizen, channel="sms" if channel == "sms" else "telegram")
        elif isinstance(effect, ScheduleTimer):
            changes.schedule(citizen.id, now + timedelta(seconds=effect.after_seconds))
        elif isinstance(effect, CancelTimer):
            changes.cancel(citizen.id)
        elif isinstance(effect, RecordSurveyAnswer):
            if runner.surveys is not None:
                await runner.surveys.answer(
                    session,
                    ticket_id=effect.ticket_id,
                    citizen_id=citizen.id,
                    satisfied=effect.satisfied,
                    channel=rating_channel,
                    deps=deps,
                )
        elif isinstance(effect, AttachSurveyReason):
            if runner.surveys is not None:
                await runner.surveys.reason(
                    session,
                    ticket_id=effect.ticket_id,
                    citizen_id=citizen.id,
                    text=effect.text,
                    channel=rating_channel,
                    deps=deps,
                )
    if timers is None:
        await changes.write(session)
    await session.flush()


def _needs_evaluation(effects: Sequence[object]) -> bool:
    """Whether any of these effects works on a rating's stored evaluation."""
    return any(isinstance(e, (AttachReasons, RecordStaffRating)) for e in effects)


@dataclass
class TimerChanges:
    """The conversation timers set and cancelled by one step, or by a group's steps, written together by
    `write`: the timers of every citizen touched go, then the ones still wanted are added (one DELETE
    and one INSERT for a whole group)."""

    channel: str
    touched: set[int] = field(default_factory=set)
    due: dict[int, datetime] = field(default_factory=dict)

    def schedule(self, citizen_id: int, due_at: datetime) -> None:
        self.touched.add(citizen_id)
        self.due[citizen_id] = due_at

    def cancel(self, citizen_id: int) -> None:
        self.touched.add(citizen_id)
        self.due.pop(citizen_id, None)

    async def write(self, session: AsyncSession) -> None:
        if not self.touched:
            return
        await session.exec(_TIMERS_OF, params={"channel": self.channel, "cs": sorted(self.touched)})
        session.add_all(
            ConversationTimer(channel=self.channel, citizen_id=c, due_at=due) for c, due in sorted(self.due.items())
        )
        self.touched, self.due = set(), {}


_TIMERS_OF = delete(ConversationTimer).where(
    col(ConversationTimer.channel) == bindparam("channel"), in_set(col(ConversationTimer.citizen_id), "cs")
)


async def _queue_replies(
    session: AsyncSession,
    deps: Deps,
    replies: tuple[Reply, ...],
    citizen: Citizen,
    channel: str,
    source_message_id: int | None,
    *,
    opted_out: bool = False,
    sms_answers_sent: int | None = None,
    deferred: list[OutboundMessage] | None = None,
) -> list[OutboundMessage]:
    purpose = "reply"
    if (channel == "sms" and citizen.sms_opted_out_at is not None) or (
        channel == "telegram" and citizen.bot_blocked_at is not None
    ):
        # Nothing goes to a sender who has opted out, except on the bot the confirmation of the opt-out
        # this input made (on SMS the carrier confirms; messaging.outbox owns that rule).
        if not (opted_out and gateway_confirms_opt_out(channel)):
            return []
        purpose = OPT_OUT_CONFIRMATION
    queued = []
    now = deps.clock.now()
    if channel == "sms" and replies and citizen.id is not None:
        if sms_answers_sent is None:
            sms_answers_sent = (await _sms_answers_sent(session, [citizen.id], now)).get(citizen.id, 0)
        replies = replies[: _sms_answers_left(deps, citizen, sms_answers_sent)]
    for reply in replies:
        if channel == "sms":
            body, buttons, edit = sms_text(reply, deps.settings.sms_signature), None, None
        else:
            body, buttons = reply.text, render_buttons(reply)
            edit = source_message_id if reply.edit_previous else None
        message = await enqueue(
            session,
            channel=channel,
            citizen=citizen,
            purpose=purpose,
            body=body,
            buttons=buttons,
            at=now,
            quiet=deps.quiet,
            edit_message_id=edit,
            deferred=deferred,
        )
        if message is not None:
            queued.append(message)
    return queued


def sms_text(reply: Reply, signature: str) -> str:
    """A reply as an SMS within two segments with the signature: its first rendering that fits (the
    service and office names shorten, the instructions never; DESIGN §2)."""
    body = first_fitting(f"{signature}{plain_text(r)}" for r in chain((reply,), reply.shorter))
    if segments(body) > 2:
        log.warning(
            "an SMS answer takes more than two segments even with the shortest names",
            extra={"segments": segments(body)},
        )
    return body


async def _sms_answers_sent(session: AsyncSession, citizen_ids: Sequence[int], now: datetime) -> dict[int, int]:
    """The SMS answers each citizen got in the last hour."""
    rows = await session.exec(_SMS_ANSWERS_SINCE, params={"cs": list(citizen_ids), "since": now - timedelta(hours=1)})
    return {citizen_id: int(n) for citizen_id, n in rows.all() if citizen_id is not None}


def _sms_answers_left(deps: Deps, citizen: Citizen, sent: int) -> int:
    """How many more answers this number may get this hour: an auto-responder answering every answer
    would otherwise keep an endless, paid exchange going. Beyond the limit the gateway stays silent
    (what the citizen wrote is still processed and recorded)."""
    left = max(0, deps.settings.sms_replies_per_hour - sent)
    if left == 0:
        log.warning("SMS answer limit reached; staying silent", extra={"citizen_id": citizen.id})
    return left


async def due_timers(store: Store, deps: Deps, limit: int = 100) -> list[tuple[int, str, int]]:
    """Timers whose time has come: (timer id, channel, citizen id)."""
    async with store.transaction() as session:
        rows = await session.exec(
            select(ConversationTimer.id, ConversationTimer.channel, ConversationTimer.citizen_id)
            .where(col(ConversationTimer.due_at) <= deps.clock.now())
            .order_by(col(ConversationTimer.due_at))
            .limit(limit)
        )
        return [(i, ch, c) for i, ch, c in rows.all() if i is not None]


async def fire_timers(runner: Runner) -> int:
    """Deliver due timers to their conversations; each fires once even with several workers. While Redis
    is unreachable the timers wait (nothing of a timer is used up before its conversation commits)."""
    watch = runner.redis_watch
    if watch is not None and not await watch.ready():
        return 0
    fired = 0
    for timer_id, channel, citizen_id in await due_timers(runner.store, runner.deps):
        try:
            outcome = await converse(
                runner,
                channel=channel,
                citizen_id=citizen_id,
                timer_id=timer_id,
                inbound=Inbound(kind="timer", at=runner.deps.clock.now()),
            )
        except Exception as exc:
            if watch is not None and is_outage(exc):
                watch.report(exc)
                return fired
            raise
        fired += 0 if outcome.duplicate else 1
    return fired


async def run_timers_forever(runner: Runner, interval_seconds: float) -> None:
    """The timer loop owned by the app: fires due conversation timers; a failed pass is retried."""
    from gateway.passes import run_passes

    await run_passes(lambda: fire_timers(runner), interval_seconds=interval_seconds, what="conversation timer")


__all__ = [
    "GroupInput",
    "Outcome",
    "Runner",
    "conversation_key",
    "converse",
    "converse_group",
    "fire_timers",
    "load_context",
    "run_timers_forever",
]
