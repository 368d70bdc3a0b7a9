"""A small in-memory world that plays the runner for the conversation tests: it builds the context,
applies effects as a service layer would (asserting its rules), keeps state with its TTL and the timer."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

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
    ReasonOption,
    RecordRating,
    RecordStaffRating,
    RecordSurveyAnswer,
    ScheduleTimer,
    SurveyRef,
    Transition,
    advance,
)

# DESIGN §4, with the short labels of the default catalogue.
CATALOGUE: dict[int, tuple[ReasonOption, ...]] = {
    1: (
        ReasonOption(108, "在办事指南之外增加新的审批条件", "增加审批条件"),
        ReasonOption(109, "需提供办事指南之外的申报材料", "指南外材料"),
        ReasonOption(110, "无理由超过法定办理时间", "超法定时限"),
        ReasonOption(111, "办事指南提供样本有错", "样本有错"),
        ReasonOption(112, "承诺在线收取申报材料实际无法收取", "无法在线收件"),
        ReasonOption(113, "多头跑窗口和部门", "多头跑"),
        ReasonOption(114, "跑动次数与承诺的不一致", "跑动次数超承诺"),
        ReasonOption(115, "服务态度差效率低", "态度差效率低"),
    ),
    2: (
        ReasonOption(207, "没有提供材料样本", "无材料样本"),
        ReasonOption(208, "没有提供材料清单", "无材料清单"),
        ReasonOption(209, "未在承诺时间内办结", "超承诺时限"),
        ReasonOption(210, "同样内容的证明材料被要求多次提交", "重复交材料"),
        ReasonOption(211, "承诺网办但无法在线办理", "无法网办"),
        ReasonOption(212, "在线预约办理后到实体大厅重复取号排队", "预约后重复排队"),
        ReasonOption(213, "窗口人员业务不熟练", "业务不熟练"),
        ReasonOption(214, "服务态度生硬", "态度生硬"),
    ),
    3: (ReasonOption(307, "办事指南基本清晰", "指南基本清晰"),),
    4: (ReasonOption(406, "办事流程清楚", "流程清楚"),),
    5: (ReasonOption(510, "服务热情高效", "热情高效"),),
}

START = datetime(2026, 5, 6, 2, 0, tzinfo=timezone.utc)  # 10:00 in Asia/Shanghai

# The longest names a department system may send (item names are up to 200 characters): replies that
# name a service must still fit two SMS segments.
LONG_ITEM = "建设工程规划许可证核发及企业投资项目备案与施工图设计文件审查合格书备案联合审批（含变更、延续、补证、注销）" * 2
LONG_OFFICE = "安康市汉滨区行政审批服务局政务服务中心第二综合受理窗口（工程建设项目审批专区）"
RECENT_SECONDS = 48 * 3600  # how far back the runner looks for bad ratings without reasons


@dataclass
class Rating:
    level: int
    at: datetime
    codes: tuple[int, ...] = ()
    text: str = ""
    reasons_given: bool = False
    staff_level: int | None = None


@dataclass
class World:
    """One citizen on one channel, as the runner would see them."""

    now: datetime = START
    invitations: dict[int, InvitationRef] = field(default_factory=dict)
    ratings: dict[int, Rating] = field(default_factory=dict)
    surveys: dict[int, SurveyRef] = field(default_factory=dict)
    survey_answers: dict[int, bool] = field(default_factory=dict)
    survey_reasons: dict[int, str] = field(default_factory=dict)
    opted_out: bool = False
    state: dict | None = None
    state_expires: datetime | None = None
    timer_due: datetime | None = None
    sent: list = field(default_factory=list)
    last: Transition | None = None

    # Setting the scene.

    def invite(
        self,
        id: int,
        item: str = "户籍迁移",
        office: str = "公安局户政窗口",
        *,
        window: bool = False,
        minutes_ago: int = 60,
    ) -> InvitationRef:
        ref = InvitationRef(
            id, item, office, date(2026, 5, 5), window, self.now - timedelta(minutes=minutes_ago)
        )
        self.invitations[id] = ref
        return ref

    def survey(self, ticket_id: int, item: str = "户籍迁移", *, minutes_ago: int = 30) -> SurveyRef:
        ref = SurveyRef(ticket_id, item, self.now - timedelta(minutes=minutes_ago))
        self.surveys[ticket_id] = ref
        return ref

    def wait(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def lose_state(self) -> None:
        self.state = None
        self.state_expires = None

    # The runner.

    def context(self) -> Context:
        open_invitations = tuple(i for i in self.invitations.values() if i.id not in self.ratings)
        recent = self.now - timedelta(seconds=RECENT_SECONDS)
        awaiting = tuple(
            RatedInvitation(self.invitations[i], r.level, r.at)
            for i, r in self.ratings.items()
            if r.level <= 2 and not r.reasons_given and r.at >= recent
        )
        staff = tuple(
            self.invitations[i]
            for i, r in self.ratings.items()
            if self.invitations[i].window and r.staff_level is None and r.at >= recent
        )
        surveys = tuple(s for s in self.surveys.values() if s.ticket_id not in self.survey_answers)
        return Context(open_invitations, CATALOGUE, surveys, awaiting, staff)

    def _stored_state(self) -> dict | None:
        if self.state_expires is not None and self.now >= self.state_expires:
            self.lose_state()
        return self.state

    def handle(self, inbound: Inbound) -> Transition:
        t = advance(self._stored_state(), inbound, self.context())
        for effect in t.effects:
            self._apply(effect)
        self.sent.extend(t.replies)
        if t.ttl_seconds:
            self.state, self.state_expires = t.state, self.now + timedelta(seconds=t.ttl_seconds)
        else:
            self.lose_state()
        self.last = t
        return t

    def _apply(self, effect) -> None:
        # What a service layer would enforce; a flow that breaks it fails the test.
        if isinstance(effect, RecordRating):
            assert effect.invitation_id in self.invitations and effect.invitation_id not in self.ratings
            self.ratings[effect.invitation_id] = Rating(effect.level, self.now)
        elif isinstance(effect, AttachReasons):
            rating = self.ratings[effect.invitation_id]
            assert effect.codes or effect.text
            assert set(effect.codes) <= {o.code for o in CATALOGUE[rating.level]}
            rating.codes += effect.codes
            rating.text = (rating.text + " " + effect.text).strip()
            rating.reasons_given = True
        elif isinstance(effect, RecordStaffRating):
            rating = self.ratings[effect.invitation_id]
            assert self.invitations[effect.invitation_id].window and rating.staff_level is None
            assert 1 <= effect.level <= 5
            rating.staff_level = effect.level
        elif isinstance(effect, RecordSurveyAnswer):
            assert effect.ticket_id in self.surveys and effect.ticket_id not in self.survey_answers
            self.survey_answers[effect.ticket_id] = effect.satisfied
        elif isinstance(effect, AttachSurveyReason):
            assert self.survey_answers.get(effect.ticket_id) is False
            self.survey_reasons[effect.ticket_id] = effect.text
        elif isinstance(effect, OptOut):
            self.opted_out = True
        elif isinstance(effect, OptIn):
            self.opted_out = False
        elif isinstance(effect, ScheduleTimer):
            self.timer_due = self.now + timedelta(seconds=effect.after_seconds)
        elif isinstance(effect, CancelTimer):
            self.timer_due = None
        else:  # pragma: no cover
            raise AssertionError(f"unknown effect {effect!r}")

    # The citizen.

    def send(self, text: str) -> Transition:
        return self.handle(Inbound("text", self.now, text=text))

    def tap(self, data: str) -> Transition:
        return self.handle(Inbound("button", self.now, data=data))

    def fire_timer(self) -> Transition:
        """Let the pending timer come due (the runner's scheduler)."""
        assert self.timer_due is not None, "no timer pending"
        self.now = max(self.now, self.timer_due)
        self.timer_due = None
        return self.handle(Inbound("timer", self.now))

    @property
    def reply(self) -> str:
        assert self.last is not None and self.last.replies
        return self.last.replies[-1].text

