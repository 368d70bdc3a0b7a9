"""Every message text of the conversations, in one place.

Texts are neutral service notices: they never ask for a good rating (interfering with an evaluation is
forbidden) and they stay short, since an SMS of more than two segments (134 Chinese characters) costs
more and arrives in pieces.
"""

from __future__ import annotations

from datetime import date

from conversations.parsing import LEVEL_WORDS

ITEM_CHARS = 16  # a long service name is cut in replies; the citizen recognises it by its start
OFFICE_CHARS = 12

HOTLINE = "12345"  # the national government-service hotline, reachable everywhere in China


def short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def day(value: date) -> str:
    return f"{value.month}月{value.day}日"


def level_words(level: int) -> str:
    return LEVEL_WORDS.get(level, str(level))


def service(
    item_name: str, office: str, completed_on: date, item_chars: int = ITEM_CHARS, office_chars: int = OFFICE_CHARS
) -> str:
    """「不动产登记」（市不动产登记中心，5月3日）; without room for the office, 「不动产登记」（5月3日）."""
    if office_chars <= 0:
        return f"「{short(item_name, item_chars)}」（{day(completed_on)}）"
    return f"「{short(item_name, item_chars)}」（{short(office, office_chars)}，{day(completed_on)}）"


def service_choice(
    item_name: str, office: str, completed_on: date, item_chars: int = ITEM_CHARS, office_chars: int = OFFICE_CHARS
) -> str:
    """A line of the "which service?" list."""
    where = f"{short(office, office_chars)} " if office_chars > 0 else ""
    return f"「{short(item_name, item_chars)}」{where}{day(completed_on)}"


def recorded(service_text: str, level: int) -> str:
    return f"已记录您对{service_text}的评价：{level_words(level)}。"


THANKS = "感谢您的反馈。"
REMARK_RECEIVED = "您的意见已收到，将转有关部门核实整改。"

# Art. 8: a bad rating carries preset reasons and/or text; the level is already recorded.
ASK_REASONS = "请告诉我们原因，回复序号（可多选如“1 3”）或文字："
ASK_REASONS_TEXT_ONLY = "请用一句话告诉我们原因。"
SUBMIT = "提交"


def reasons_reminder(item_name: str, level: int, item_chars: int = ITEM_CHARS) -> str:
    return f"您对「{short(item_name, item_chars)}」的评价为{level_words(level)}。"


def reasons_recorded(
    item_name: str, labels: list[str], with_text: bool, item_chars: int = ITEM_CHARS, listed: bool = True
) -> str:
    """The confirmation of reasons; `listed` False counts them instead of naming them (for a long list)."""
    parts = "、".join(labels) if listed or not labels else f"{len(labels)}项原因"
    if parts and with_text:
        what = f"（{parts}，及您的留言）"
    elif parts:
        what = f"（{parts}）"
    else:
        what = ""
    return f"已收到您对「{short(item_name, item_chars)}」的意见{what}，将转有关部门核实整改。谢谢！"


def unknown_numbers(numbers: list[str], count: int) -> str:
    shown = "、".join(numbers[:3]) + ("等" if len(numbers) > 3 else "")
    if count:
        return f"列表中没有{shown}。请回复1-{count}中的序号，或直接回复文字。"
    return f"列表中没有{shown}。请直接回复文字说明原因。"


REASONS_EMPTY = "请回复原因的序号（如“1 3”），或直接回复文字。"
REASONS_PICK_FIRST = "请先勾选至少一项原因，或直接回复文字。"

# Art. 7: window cases may also rate the staff member; it is optional.
ASK_STAFF = "如愿意，也可评价窗口工作人员（可跳过）："
SKIP = "跳过"


def staff_recorded(level: int) -> str:
    return f"已记录您对窗口工作人员的评价：{level_words(level)}。谢谢！"


STAFF_SKIPPED = "好的，已跳过。谢谢！"


def choose_invitation(count: int, level: int) -> str:
    return f"您有{count}项服务待评价，您的评价“{level_words(level)}”是针对哪一项？请回复序号："


def choose_out_of_range(count: int) -> str:
    return f"请回复1-{count}中的序号。"


CLARIFY_GOOD = "请回复具体等级：5 非常满意，4 满意，3 基本满意。"
CLARIFY_BAD = "请回复具体等级：2 不满意，1 非常不满意，可在数字后写原因。"

NOTHING_TO_RATE = f"您目前没有待评价的服务。如需咨询或投诉，请拨打{HOTLINE}政务服务便民热线。"
HELP = "回复数字评价：5非常满意 4满意 3基本满意 2不满意 1非常不满意，可在数字后空一格写意见。回复TD退订。"
STALE_BUTTON = "该选项已失效，或这项服务已评价。"

OPTED_OUT = "已退订，今后不再向您发送评价邀请。回复START可重新开通。"
OPTED_IN = "已重新开通评价邀请。回复TD可退订。"

# Callback surveys (回访, Art. 15(五)).
SURVEY_SATISFIED = "已记录您的回访意见：满意。谢谢！"
SURVEY_ASK_REASON = "已记录您的回访意见：不满意。请简要说明原因，我们将转有关部门处理。"
SURVEY_REASON_RECORDED = "已收到您的说明，将转有关部门处理。谢谢！"
SURVEY_UNSATISFIED_RECORDED = "已记录您的回访意见：不满意，并已收到您的说明，将转有关部门处理。谢谢！"
SURVEY_REASON_EMPTY = "请用一句话说明不满意的原因。"


def survey_prompt(item_name: str, item_chars: int = ITEM_CHARS) -> str:
    return f"回访：您对「{short(item_name, item_chars)}」差评的整改结果是否满意？请回复序号（不满意可在序号后写原因）："


def rating_prompt(
    item_name: str, office: str, completed_on: date, item_chars: int = ITEM_CHARS, office_chars: int = OFFICE_CHARS
) -> str:
    where = f"在{short(office, office_chars)}" if office_chars > 0 else ""
    return (
        f"您{where}办理的「{short(item_name, item_chars)}」已于{day(completed_on)}办结，"
        "请对本次服务作出评价，回复数字："
    )


# Name lengths (item, office) tried in turn, longest first: a reply that would not fit two SMS
# segments with the operator's signature is sent with shorter names, the office going first, and
# never with shorter instructions.
NAME_BUDGETS: tuple[tuple[int, int], ...] = (
    (ITEM_CHARS, OFFICE_CHARS),
    (ITEM_CHARS, 8),
    (ITEM_CHARS, 4),
    (ITEM_CHARS, 0),
    (12, 0),
    (10, 0),
    (8, 0),
    (6, 0),
    (4, 0),
    (3, 0),
    (2, 0),
)
