"""The dialogue: `advance(state, inbound, ctx) -> Transition`, one pure step at a time.

The same flow serves SMS (typed replies) and the Telegram bot (buttons and typed replies). It does
no I/O: the runner loads the context, calls `advance`, applies the effects and sends the replies in
one transaction, then saves the returned state. See docs/conversations.md.

Reading order for an inbound text:
1. opt-out, opt-in and help keywords, whatever the step;
2. the current step (a question the gateway asked), unless a newer prompt superseded it;
3. otherwise the most recent prompt first: an invitation to rate, a callback question, or a
   reasons question whose state was lost; an answer that does not fit it is tried on the others;
4. otherwise a short help reply. Nothing a citizen types raises an exception.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from conversations import buttons, parsing, texts
from conversations.model import (
    AttachReasons,
    AttachSurveyReason,
    CancelTimer,
    Choice,
    Context,
    Effect,
    Inbound,
    InvitationRef,
    OptIn,
    OptOut,
    RatedInvitation,
    ReasonOption,
    RecordRating,
    RecordStaffRating,
    RecordSurveyAnswer,
    Renderings,
    Reply,
    ScheduleTimer,
    SurveyRef,
    Transition,
)
from conversations.steps import (
    IDLE,
    MAX_CANDIDATES,
    AwaitingReasons,
    AwaitingStaff,
    AwaitingSurveyReason,
    Choosing,
    Clarifying,
    Idle,
    Step,
    dump,
    load,
)

STATE_TTL_SECONDS = 24 * 3600  # an open question (reasons, staff, survey reason) is kept a day
QUESTION_TTL_SECONDS = 3600  # "which service?" / "which level?": a late digit more likely means something else
MAX_SELECTED_REASONS = 32


def advance(state: dict | None, inbound: Inbound, ctx: Context) -> Transition:
    """Take one input of a citizen (or a due timer) and say what to record, answer and remember."""
    step = load(state)
    if inbound.kind == "timer":
        return _on_timer(step, inbound.at, ctx)
    if inbound.kind == "button":
        return _on_button(step, inbound.data, inbound.at, ctx)
    return _on_text(step, parsing.clean(inbound.text), inbound.at, ctx)


# Prompts sent by the messaging layer, so that their buttons follow the same payload grammar.


def rating_prompt(invitation: InvitationRef) -> Reply:
    """The invitation to rate a service: neutral, with a button per level (5 first, as on the page)."""
    choices = tuple(
        Choice(parsing.LEVEL_WORDS[level], buttons.rate_data(invitation.id, level), key=str(level))
        for level in (5, 4, 3, 2, 1)
    )
    return _named(
        lambda item, office: Reply(
            texts.rating_prompt(invitation.item_name, invitation.office, invitation.completed_on, item, office),
            choices,
        )
    )


def survey_prompt(survey: SurveyRef) -> Reply:
    """The callback question (回访) about a ticket's rectification."""
    choices = (
        Choice("满意", buttons.survey_data(survey.ticket_id, True), key="1"),
        Choice("不满意", buttons.survey_data(survey.ticket_id, False), key="2"),
    )
    return _named(lambda item, _office: Reply(texts.survey_prompt(survey.item_name, item), choices))


# Plumbing.


def _named(build: Callable[[int, int], Reply]) -> Reply:
    """A reply that names services, with its renderings at shorter name lengths (texts.NAME_BUDGETS),
    built when asked for."""
    return _rendered(build, texts.NAME_BUDGETS)


def _rendered(build: Callable[..., Reply], params: Sequence[tuple[Any, ...]]) -> Reply:
    """build(*params[0]), with the renderings of the other parameters as its `shorter`, in order."""
    return replace(build(*params[0]), shorter=Renderings(build, params[1:]))


def _done(step: Step, ctx: Context, replies: Iterable[Reply] = (), effects: Iterable[Effect] = ()) -> Transition:
    return Transition(dump(step), tuple(replies), tuple(effects), _ttl(step, ctx))


def _say(step: Step, ctx: Context, text: str) -> Transition:
    return _done(step, ctx, (Reply(text),))


def _ttl(step: Step, ctx: Context) -> int:
    if isinstance(step, Idle):
        return 0
    if isinstance(step, (Choosing, Clarifying)):
        return QUESTION_TTL_SECONDS
    if isinstance(step, AwaitingReasons):
        # The state must outlive the reminder timer, or the reminder finds nothing to remind of.
        return max(STATE_TTL_SECONDS, ctx.reminder_after_seconds + QUESTION_TTL_SECONDS)
    return STATE_TTL_SECONDS


def _superseded(step: Step, ctx: Context) -> bool:
    """A prompt sent after the step's question is what the citizen now answers."""
    if isinstance(step, Idle):
        return False
    return any(i.sent_at > step.since for i in ctx.open_invitations) or any(
        s.sent_at > step.since for s in ctx.open_surveys
    )


def _newest_first(invitations: Iterable[InvitationRef]) -> list[InvitationRef]:
    return sorted(invitations, key=lambda i: (i.sent_at, i.id), reverse=True)


def _open_invitation(ctx: Context, invitation_id: int) -> InvitationRef | None:
    return next((i for i in ctx.open_invitations if i.id == invitation_id), None)


def _awaiting(ctx: Context, invitation_id: int) -> RatedInvitation | None:
    return next((r for r in ctx.awaiting_reasons if r.invitation.id == invitation_id), None)


def _awaits_staff(ctx: Context, invitation_id: int) -> bool:
    return any(i.id == invitation_id for i in ctx.awaiting_staff_rating)


def _options(ctx: Context, level: int) -> tuple[ReasonOption, ...]:
    return tuple(ctx.reasons_by_level.get(level, ()))


def _all_codes(ctx: Context) -> set[int]:
    return {o.code for options in ctx.reasons_by_level.values() for o in options}


def _service(
    invitation: InvitationRef, item_chars: int = texts.ITEM_CHARS, office_chars: int = texts.OFFICE_CHARS
) -> str:
    return texts.service(invitation.item_name, invitation.office, invitation.completed_on, item_chars, office_chars)


# Typed text.


def _on_text(step: Step, text: str, at: datetime, ctx: Context) -> Transition:
    if _superseded(step, ctx):
        step = IDLE
    keyword = parsing.keyword(text) if text else None
    if keyword == "opt_out":
        return _done(IDLE, ctx, (Reply(texts.OPTED_OUT),), (OptOut(), CancelTimer()))
    if keyword == "opt_in":
        return _done(step, ctx, (Reply(texts.OPTED_IN),), (OptIn(),))
    if keyword == "help":
        return _say(step, ctx, texts.HELP)
    handler = _STEP_HANDLERS.get(type(step))
    if handler is not None:
        outcome = handler(step, text, at, ctx)
        if outcome is not None:
            return outcome
    return _idle(text, at, ctx)


def _idle(text: str, at: datetime, ctx: Context) -> Transition:
    """No question pending: read the text against the open prompts, most recent first."""
    attempts: list[tuple[datetime, int, Callable[[str, datetime, Context], Transition | None]]] = []
    if ctx.open_invitations:
        attempts.append((max(i.sent_at for i in ctx.open_invitations), 0, _try_rating))
    if ctx.open_surveys:
        attempts.append((max(s.sent_at for s in ctx.open_surveys), 1, _try_survey))
    if ctx.awaiting_reasons:
        attempts.append((max(r.rated_at for r in ctx.awaiting_reasons), 2, _try_late_reasons))
    # Newest first; on a tie the rating, then the survey, then the reasons.
    attempts.sort(key=lambda a: (a[0], -a[1]), reverse=True)
    for _, _, attempt in attempts:
        outcome = attempt(text, at, ctx)
        if outcome is not None:
            return outcome
    if not ctx.open_invitations and (parsing.parse_level(text) is not None or not attempts):
        return _say(IDLE, ctx, texts.NOTHING_TO_RATE)
    return _say(IDLE, ctx, texts.HELP)


def _try_rating(text: str, at: datetime, ctx: Context) -> Transition | None:
    answer = parsing.parse_level(text)
    if isinstance(answer, parsing.LevelAnswer):
        return _rate(answer.level, answer.text, at, ctx)
    if isinstance(answer, parsing.AmbiguousLevel):
        question = texts.CLARIFY_GOOD if answer.group == "good" else texts.CLARIFY_BAD
        return _say(Clarifying(answer.text, at), ctx, question)
    return None


def _rate(level: int, remark: str, at: datetime, ctx: Context) -> Transition:
    """A level for "the" open service: record it, or ask which one when there are several."""
    invitations = _newest_first(ctx.open_invitations)
    if not invitations:
        return _say(IDLE, ctx, texts.NOTHING_TO_RATE)
    if len(invitations) == 1:
        return _record(invitations[0], level, remark, at, ctx)
    shown = invitations[:MAX_CANDIDATES]

    def question(item: int, office: int) -> Reply:
        choices = tuple(
            Choice(
                texts.service_choice(i.item_name, i.office, i.completed_on, item, office),
                buttons.rate_data(i.id, level),
                key=str(n),
            )
            for n, i in enumerate(shown, 1)
        )
        return Reply(texts.choose_invitation(len(invitations), level), choices)

    step = Choosing(level, tuple(i.id for i in shown), remark, at)
    return _done(step, ctx, (_named(question),))


def _record(invitation: InvitationRef, level: int, remark: str, at: datetime, ctx: Context) -> Transition:
    """Record the rating at once (it is never lost while waiting), then ask what the level calls for."""
    effects: list[Effect] = [RecordRating(invitation.id, level)]

    def lead(item: int, office: int) -> str:
        return texts.recorded(_service(invitation, item, office), level)

    if remark:
        effects.append(AttachReasons(invitation.id, (), remark))
    if level in parsing.BAD_LEVELS and not remark:
        # Art. 8: a bad rating needs reasons or text; ask once now, remind once later.
        effects.append(ScheduleTimer(ctx.reminder_after_seconds))
        rated = RatedInvitation(invitation, level, at)
        reply = _reasons_reply(rated, (), ctx, lead=lead)
        return _done(AwaitingReasons(invitation.id, level, (), False, at), ctx, (reply,), effects)
    after = texts.REMARK_RECEIVED if level in parsing.BAD_LEVELS else ""
    if invitation.window:
        # Art. 7: window cases may also rate the staff member; offered, never required.
        staff = _staff_reply(invitation.id, lambda item, office: lead(item, office) + after)
        return _done(AwaitingStaff(invitation.id, at), ctx, (staff,), effects)
    if level not in parsing.BAD_LEVELS:
        after += texts.THANKS
    return _done(IDLE, ctx, (_named(lambda item, office: Reply(lead(item, office) + after)),), effects)


def _reasons_reply(
    rated: RatedInvitation,
    selected: tuple[int, ...],
    ctx: Context,
    *,
    lead: Callable[[int, int], str],
    edit: bool = False,
) -> Reply:
    """The question for the reasons, named (`lead` at each name budget); its choices are built once."""
    options = _options(ctx, rated.level)
    if not options:
        return _named(lambda item, office: Reply(lead(item, office) + texts.ASK_REASONS_TEXT_ONLY, edit_previous=edit))
    invitation_id = rated.invitation.id
    choices = tuple(
        Choice(o.short, buttons.reason_toggle_data(invitation_id, o.code), o.code in selected, str(n))
        for n, o in enumerate(options, 1)
    ) + (Choice(texts.SUBMIT, buttons.reason_submit_data(invitation_id)),)
    return _named(
        lambda item, office: Reply(
            lead(item, office) + texts.ASK_REASONS, choices, multi_select=True, edit_previous=edit
        )
    )


def _staff_reply(invitation_id: int, lead: Callable[[int, int], str]) -> Reply:
    """The offer to rate the staff member, named (`lead` at each name budget)."""
    choices = _staff_choices(invitation_id)
    return _named(lambda item, office: Reply(lead(item, office) + texts.ASK_STAFF, choices))


def _staff_choices(invitation_id: int) -> tuple[Choice, ...]:
    return tuple(
        Choice(parsing.LEVEL_WORDS[level], buttons.staff_data(invitation_id, level), key=str(level))
        for level in (5, 4, 3, 2, 1)
    ) + (Choice(texts.SKIP, buttons.staff_data(invitation_id, 0), key="0"),)


def _try_survey(text: str, at: datetime, ctx: Context) -> Transition | None:
    answer = parsing.parse_survey(text)
    if answer is None:
        return None
    survey = max(ctx.open_surveys, key=lambda s: (s.sent_at, s.ticket_id))
    return _answer_survey(survey.ticket_id, answer.satisfied, answer.text, at, ctx)


def _answer_survey(ticket_id: int, satisfied: bool, remark: str, at: datetime, ctx: Context) -> Transition:
    effects: list[Effect] = [RecordSurveyAnswer(ticket_id, satisfied)]
    if satisfied:
        return _done(IDLE, ctx, (Reply(texts.SURVEY_SATISFIED),), effects)
    if remark:
        effects.append(AttachSurveyReason(ticket_id, remark))
        return _done(IDLE, ctx, (Reply(texts.SURVEY_UNSATISFIED_RECORDED),), effects)
    return _done(AwaitingSurveyReason(ticket_id, at), ctx, (Reply(texts.SURVEY_ASK_REASON),), effects)


def _try_late_reasons(text: str, at: datetime, ctx: Context) -> Transition | None:
    """Reasons for a recent bad rating whose conversation state expired or was superseded."""
    if not parsing.has_content(text) or parsing.is_rating_words(text):
        return None
    rated = max(ctx.awaiting_reasons, key=lambda r: (r.rated_at, r.invitation.id))
    retry = AwaitingReasons(rated.invitation.id, rated.level, (), True, at)
    return _take_reasons(rated, retry, text, at, ctx)


def _take_reasons(rated: RatedInvitation, step: AwaitingReasons, text: str, at: datetime, ctx: Context) -> Transition:
    options = _options(ctx, rated.level)
    answer = parsing.parse_reasons(text, options, other_codes=_all_codes(ctx))
    if answer.unknown:
        # Nothing is attached from a message with a wrong number: the citizen sends it again.
        again = AwaitingReasons(step.invitation_id, rated.level, step.selected, step.reminded, at)
        return _say(again, ctx, texts.unknown_numbers(list(answer.unknown), len(options)))
    if not answer.has_content:
        return _say(step, ctx, texts.REASONS_EMPTY)
    codes = tuple(dict.fromkeys(_ticked(step, options) + answer.codes))
    return _reasons_given(rated, codes, answer.text, at, ctx)


def _ticked(step: AwaitingReasons, options: tuple[ReasonOption, ...]) -> tuple[int, ...]:
    """The ticked codes that are still reasons of this level (the catalogue is data and may change)."""
    valid = {o.code for o in options}
    return tuple(c for c in step.selected if c in valid)


def _reasons_given(
    rated: RatedInvitation, codes: tuple[int, ...], remark: str, at: datetime, ctx: Context
) -> Transition:
    invitation = rated.invitation
    effects: list[Effect] = [AttachReasons(invitation.id, codes, remark), CancelTimer()]
    shorts = {o.code: o.short for o in _options(ctx, rated.level)}
    labels = [shorts[c] for c in codes if c in shorts]

    staff = _staff_choices(invitation.id) if invitation.window and _awaits_staff(ctx, invitation.id) else ()

    def reply(item: int, listed: bool) -> Reply:
        text = texts.reasons_recorded(invitation.item_name, labels, bool(remark), item, listed)
        return Reply(text + texts.ASK_STAFF, staff) if staff else Reply(text)

    # Shorter names first; a long list of reasons is then counted instead of named.
    answer = _rendered(reply, [(item, listed) for listed in (True, False) for item, _ in texts.NAME_BUDGETS])
    if staff:
        return _done(AwaitingStaff(invitation.id, at), ctx, (answer,), effects)
    return _done(IDLE, ctx, (answer,), effects)


def _staff_given(invitation_id: int, level: int, ctx: Context) -> Transition:
    if level == 0:
        return _say(IDLE, ctx, texts.STAFF_SKIPPED)
    return _done(IDLE, ctx, (Reply(texts.staff_recorded(level)),), (RecordStaffRating(invitation_id, level),))


# Steps: each returns None when the text is not an answer to its question; the idle reading follows.


def _choosing(step: Choosing, text: str, at: datetime, ctx: Context) -> Transition | None:
    number = parsing.parse_number(text)
    if number is None:
        return None
    if not 1 <= number <= len(step.candidates):
        return _say(step, ctx, texts.choose_out_of_range(len(step.candidates)))
    invitation = _open_invitation(ctx, step.candidates[number - 1])
    if invitation is None:  # rated meanwhile on another channel, or its rating period ended
        return _say(IDLE, ctx, texts.STALE_BUTTON)
    return _record(invitation, step.level, step.text, at, ctx)


def _clarifying(step: Clarifying, text: str, at: datetime, ctx: Context) -> Transition | None:
    answer = parsing.parse_level(text)
    if isinstance(answer, parsing.LevelAnswer):
        return _rate(answer.level, answer.text or step.text, at, ctx)
    if isinstance(answer, parsing.AmbiguousLevel):
        question = texts.CLARIFY_GOOD if answer.group == "good" else texts.CLARIFY_BAD
        return _say(Clarifying(answer.text or step.text, at), ctx, question)
    return None


def _reasons(step: AwaitingReasons, text: str, at: datetime, ctx: Context) -> Transition | None:
    rated = _awaiting(ctx, step.invitation_id)
    if rated is None:  # reasons came by another channel (the rating page), or the rating is gone
        return None
    if not parsing.has_content(text) or parsing.is_rating_words(text):
        return _say(step, ctx, texts.REASONS_EMPTY)
    return _take_reasons(rated, step, text, at, ctx)


def _staff(step: AwaitingStaff, text: str, at: datetime, ctx: Context) -> Transition | None:
    if not _awaits_staff(ctx, step.invitation_id):
        return None
    level = parsing.parse_staff(text)
    if level is None:  # optional question: anything else simply ends it
        return None
    return _staff_given(step.invitation_id, level, ctx)


def _survey_reason(step: AwaitingSurveyReason, text: str, at: datetime, ctx: Context) -> Transition | None:
    if not parsing.has_content(text) or parsing.is_rating_words(text) or parsing.parse_number(text) is not None:
        return _say(step, ctx, texts.SURVEY_REASON_EMPTY)
    return _done(IDLE, ctx, (Reply(texts.SURVEY_REASON_RECORDED),), (AttachSurveyReason(step.ticket_id, text),))


_STEP_HANDLERS: dict[type, Callable[..., Transition | None]] = {
    Choosing: _choosing,
    Clarifying: _clarifying,
    AwaitingReasons: _reasons,
    AwaitingStaff: _staff,
    AwaitingSurveyReason: _survey_reason,
}


# Timers.


def _on_timer(step: Step, at: datetime, ctx: Context) -> Transition:
    """The reasons reminder: once, only while the reasons are still missing and nothing newer was asked."""
    if not isinstance(step, AwaitingReasons):
        return _done(step, ctx)
    rated = _awaiting(ctx, step.invitation_id)
    if rated is None or _superseded(step, ctx):
        return _done(IDLE, ctx)
    if step.reminded:
        return _done(step, ctx)
    reply = _reasons_reply(
        rated,
        step.selected,
        ctx,
        lead=lambda item, _office: texts.reasons_reminder(rated.invitation.item_name, rated.level, item),
    )
    reminded = AwaitingReasons(step.invitation_id, rated.level, step.selected, True, at)
    return _done(reminded, ctx, (reply,))


# Buttons.


def _on_button(step: Step, data: str, at: datetime, ctx: Context) -> Transition:
    """A tapped button names what it is about; it acts only on what the runner loaded for this citizen."""
    button = buttons.parse_button(data)
    stale = _say(step, ctx, texts.STALE_BUTTON)
    if isinstance(button, buttons.RateButton):
        invitation = _open_invitation(ctx, button.invitation_id)
        if invitation is None:
            return stale
        remark = ""
        if isinstance(step, Choosing) and button.invitation_id in step.candidates and button.level == step.level:
            remark = step.text
        return _answers(_record(invitation, button.level, remark, at, ctx))
    if isinstance(button, (buttons.ReasonToggle, buttons.ReasonSubmit)):
        rated = _awaiting(ctx, button.invitation_id)
        if rated is None:
            return stale
        options = _options(ctx, rated.level)
        if isinstance(step, AwaitingReasons) and step.invitation_id == button.invitation_id:
            current = AwaitingReasons(
                step.invitation_id, rated.level, _ticked(step, options), step.reminded, step.since
            )
        else:
            # No state for it (expired, or another question came between): start from nothing
            # ticked, and with no reminder pending.
            current = AwaitingReasons(button.invitation_id, rated.level, (), True, at)
        if isinstance(button, buttons.ReasonSubmit):
            if not current.selected:
                return _say(current, ctx, texts.REASONS_PICK_FIRST)
            return _answers(_reasons_given(rated, current.selected, "", at, ctx))
        if button.code not in {o.code for o in options}:
            return stale
        if button.code in current.selected:
            selected = tuple(c for c in current.selected if c != button.code)
        else:
            selected = (current.selected + (button.code,))[:MAX_SELECTED_REASONS]
        toggled = AwaitingReasons(current.invitation_id, rated.level, selected, current.reminded, current.since)
        reply = _reasons_reply(
            rated,
            selected,
            ctx,
            lead=lambda item, office: texts.recorded(_service(rated.invitation, item, office), rated.level),
            edit=True,
        )
        return _done(toggled, ctx, (reply,))
    if isinstance(button, buttons.StaffButton):
        if not _awaits_staff(ctx, button.invitation_id):
            return stale
        return _answers(_staff_given(button.invitation_id, button.level, ctx))
    if isinstance(button, buttons.SurveyButton):
        if not any(s.ticket_id == button.ticket_id for s in ctx.open_surveys):
            return stale
        return _answers(_answer_survey(button.ticket_id, button.satisfied, "", at, ctx))
    return stale


def _answers(transition: Transition) -> Transition:
    """The tap answered its keyboard's question: the bot closes that keyboard."""
    return replace(transition, answered=True)


__all__ = ["QUESTION_TTL_SECONDS", "STATE_TTL_SECONDS", "advance", "rating_prompt", "survey_prompt"]
