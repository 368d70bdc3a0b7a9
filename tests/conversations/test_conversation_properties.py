"""Property tests: whatever arrives, in whatever state, advance() answers sensibly and acts only on the context."""

import json
from datetime import date, timedelta

from conversation_world import CATALOGUE, START, World
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conversations import (
    AttachReasons,
    AttachSurveyReason,
    CancelTimer,
    Context,
    Inbound,
    InvitationRef,
    OptOut,
    RatedInvitation,
    RecordRating,
    RecordStaffRating,
    RecordSurveyAnswer,
    ScheduleTimer,
    SurveyRef,
    advance,
)
from conversations import steps
from conversations.buttons import MAX_DATA_BYTES, parse_button

SETTINGS = settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

TOKENS = [
    "1", "2", "3", "4", "5", "0", "9", "13", "１３", "113", "209", "1 3", "1,3", "1、3", "好评", "差评",
    "满意", "不满意", "非常不满意", "非常满意", "基本满意", "一般", "跳过", "TD", "STOP", "START", "帮助", "?",
    "窗口让我跑了三趟", "，", " ", "😀", "\x00", "\u200b", "ok", "rt:1:5",
]
texts = st.one_of(
    st.text(max_size=60),
    st.lists(st.sampled_from(TOKENS), max_size=6).map(" ".join),
    st.lists(st.sampled_from(TOKENS), max_size=6).map("".join),
    st.sampled_from(TOKENS),
    st.just("慢" * 5000),
)
ids = st.integers(min_value=1, max_value=6)
button_data = st.one_of(
    st.builds(lambda i, n: f"rt:{i}:{n}", ids, st.integers(0, 6)),
    st.builds(lambda i, c: f"rs:{i}:{c}", ids, st.sampled_from([108, 113, 115, 207, 209, 307, 999, 0])),
    st.builds(lambda i: f"rs:{i}:ok", ids),
    st.builds(lambda i, n: f"st:{i}:{n}", ids, st.integers(0, 6)),
    st.builds(lambda i, n: f"sv:{i}:{n}", ids, st.integers(0, 3)),
    st.text(max_size=80),
)
minutes = st.integers(min_value=-30, max_value=3000)


@st.composite
def contexts(draw) -> Context:
    def when(offset: int):
        return START - timedelta(minutes=offset)

    invitations = [
        InvitationRef(i, f"事项{i}", f"窗口{i}", date(2026, 5, 5), draw(st.booleans()), when(draw(minutes)))
        for i in draw(st.sets(ids, max_size=6))
    ]
    open_ids = draw(st.sets(st.sampled_from([i.id for i in invitations]))) if invitations else set()
    rated = [i for i in invitations if i.id not in open_ids]
    awaiting = tuple(
        RatedInvitation(i, draw(st.sampled_from([1, 2])), when(draw(minutes)))
        for i in rated
        if draw(st.booleans())
    )
    staff = tuple(i for i in rated if i.window and draw(st.booleans()))
    surveys = tuple(SurveyRef(t, f"事项{t}", when(draw(minutes))) for t in draw(st.sets(ids, max_size=3)))
    return Context(
        tuple(i for i in invitations if i.id in open_ids),
        CATALOGUE,
        surveys,
        awaiting,
        staff,
        reminder_after_seconds=draw(st.integers(1, 7200)),
    )


@st.composite
def states(draw):
    since = (START - timedelta(minutes=draw(minutes))).isoformat()
    valid = st.one_of(
        st.just({"v": 1, "step": "idle"}),
        st.builds(
            lambda level, cands, text: {"v": 1, "step": "choose_invitation", "level": level,
                                        "candidates": cands, "text": text, "since": since},
            st.integers(1, 5), st.lists(ids, min_size=1, max_size=5), st.text(max_size=20),
        ),
        st.builds(lambda text: {"v": 1, "step": "clarify", "text": text, "since": since}, st.text(max_size=20)),
        st.builds(
            lambda i, level, sel, rem: {"v": 1, "step": "reasons", "invitation_id": i, "level": level,
                                        "selected": sel, "reminded": rem, "since": since},
            ids, st.integers(1, 2), st.lists(st.sampled_from([108, 113, 209, 999]), max_size=4), st.booleans(),
        ),
        st.builds(lambda i: {"v": 1, "step": "staff", "invitation_id": i, "since": since}, ids),
        st.builds(lambda t: {"v": 1, "step": "survey_reason", "ticket_id": t, "since": since}, ids),
    )
    junk = st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=12), children, max_size=4),
        max_leaves=10,
    )
    return draw(st.one_of(st.none(), valid, junk))


inbounds = st.one_of(
    st.builds(lambda t: Inbound("text", START, text=t), texts),
    st.builds(lambda d: Inbound("button", START, data=d), button_data),
    st.just(Inbound("timer", START)),
)

KNOWN_STEPS = {"idle", "choose_invitation", "clarify", "reasons", "staff", "survey_reason"}


@SETTINGS
@given(state=states(), inbound=inbounds, ctx=contexts())
def test_advance_never_fails_and_acts_only_on_the_context(state, inbound, ctx):
    t = advance(state, inbound, ctx)

    # The state is small, JSON, versioned, and reads back as itself.
    assert json.loads(json.dumps(t.state, allow_nan=False)) == t.state
    assert t.state["v"] == 1 and t.state["step"] in KNOWN_STEPS
    assert steps.dump(steps.load(t.state)) == t.state
    assert (t.ttl_seconds == 0) == (t.step == "idle") and t.ttl_seconds >= 0

    for reply in t.replies:
        assert reply.text and len(reply.text) <= 400
        for choice in reply.choices:
            assert len(choice.data.encode()) <= MAX_DATA_BYTES and parse_button(choice.data) is not None

    open_ids = {i.id for i in ctx.open_invitations}
    awaiting = {r.invitation.id: r.level for r in ctx.awaiting_reasons}
    staff_ids = {i.id for i in ctx.awaiting_staff_rating} | {i.id for i in ctx.open_invitations if i.window}
    survey_ids = {s.ticket_id for s in ctx.open_surveys}
    rated_now = {e.invitation_id: e.level for e in t.effects if isinstance(e, RecordRating)}
    assert len(rated_now) <= 1

    for effect in t.effects:
        if isinstance(effect, RecordRating):
            assert effect.invitation_id in open_ids and 1 <= effect.level <= 5
        elif isinstance(effect, AttachReasons):
            level = rated_now.get(effect.invitation_id, awaiting.get(effect.invitation_id))
            assert level is not None
            assert set(effect.codes) <= {o.code for o in CATALOGUE[level]}
            assert effect.codes or effect.text
            assert len(effect.text) <= 1000
        elif isinstance(effect, RecordStaffRating):
            assert effect.invitation_id in staff_ids and 1 <= effect.level <= 5
        elif isinstance(effect, RecordSurveyAnswer):
            assert effect.ticket_id in survey_ids
        elif isinstance(effect, AttachSurveyReason):
            stored = state.get("ticket_id") if isinstance(state, dict) else None
            assert effect.ticket_id in survey_ids or effect.ticket_id == stored
            assert effect.text
        elif isinstance(effect, ScheduleTimer):
            assert any(e.level <= 2 for e in t.effects if isinstance(e, RecordRating))
            assert effect.after_seconds == ctx.reminder_after_seconds

    if any(isinstance(e, OptOut) for e in t.effects):
        assert set(map(type, t.effects)) == {OptOut, CancelTimer} and t.step == "idle"


actions = st.lists(
    st.one_of(
        st.tuples(st.just("send"), texts),
        st.tuples(st.just("tap"), button_data),
        st.tuples(st.just("timer"), st.none()),
        st.tuples(st.just("wait"), st.integers(0, 30 * 3600)),
        st.tuples(st.just("invite"), st.booleans()),
        st.tuples(st.just("survey"), st.none()),
    ),
    max_size=12,
)


@SETTINGS
@given(actions=actions)
def test_conversations_keep_the_service_rules(actions):
    # The World's runner asserts what a service layer enforces: one rating per service, reasons
    # only for the rating's level, staff ratings only once and only for window services.
    world = World()
    world.invite(1, window=True)
    world.invite(2)
    next_id = 3
    for kind, value in actions:
        if kind == "send":
            world.send(value)
        elif kind == "tap":
            world.tap(value)
        elif kind == "timer" and world.timer_due is not None:
            world.fire_timer()
        elif kind == "wait":
            world.wait(value)
        elif kind == "invite":
            world.invite(next_id, window=value, minutes_ago=0)
            next_id += 1
        elif kind == "survey":
            world.survey(next_id, minutes_ago=0)
            next_id += 1
    for rating in world.ratings.values():
        assert 1 <= rating.level <= 5
