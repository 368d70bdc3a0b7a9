"""The bot's own message texts (the rating dialogue's texts are in conversations/texts.py).

Neutral service notices, like every message of the gateway: they never ask for a good rating.
"""

from __future__ import annotations

ABOUT = (
    "您好！这里是政务服务“好差评”评价机器人。\n"
    "您在政务服务大厅、网上或自助终端办结事项后，可在这里收到评价邀请，点按钮即可评价；"
    "差评将转有关部门限期整改，办理结果也会在这里答复您。"
)
HOW_TO_LINK = "如需在这里接收评价邀请，请点击评价短信或评价页面中的 Telegram 链接。"
COMMANDS = "发送 /my 查看您的评价和差评办理进度，/help 查看使用说明。"

HELP = (
    "点评价邀请下方的按钮即可评价，也可直接回复数字：5非常满意 4满意 3基本满意 2不满意 1非常不满意，"
    "数字后可空一格写意见。\n"
    "/my 查看您的评价和差评办理进度\n"
    "回复TD不再接收评价邀请，发送 /start 可重新开通。"
)

LINKED = "已关联，今后的评价邀请将发送到这里。"
LINK_INVALID = "该链接无效，请核对评价短信或评价页面中的链接。"
LINK_EXPIRED = "该服务的评价期（办结后7个工作日）已结束，感谢您的关注。"
ALREADY_RATED = "该服务已评价过，每项服务只能评价一次。感谢您的参与。"


def invitation_elsewhere(rating_url: str) -> str:
    """The invitation's citizen already uses another Telegram account: it is not moved (it may not be theirs)."""
    return (
        "该服务的评价邀请已关联到另一个 Telegram 账号。为保护评价人信息，不能改为关联本账号。"
        f"如需评价，请打开评价页面：{rating_url}"
    )


def chat_elsewhere(rating_url: str) -> str:
    """This chat already belongs to another citizen's records: the two are not merged."""
    return (
        "本 Telegram 账号已关联其他办事人的评价记录，为保护评价人信息，不能再关联该服务。"
        f"如需评价，请打开评价页面：{rating_url}"
    )


def code_sent(phone_masked: str, minutes: int, rating_url: str) -> str:
    """A code went to the citizen's phone: the chat is bound only when it is answered here."""
    return (
        f"为确认您是办事人本人，已向手机 {phone_masked} 发送{minutes}分钟内有效的6位验证码，"
        "请直接在这里回复验证码，验证后今后的评价邀请将发送到这里。\n"
        f"如不需要关联，也可打开评价页面评价：{rating_url}"
    )


def link_code_sms(signature: str, code: str, minutes: int) -> str:
    """The SMS with the code: it names what it is for, so a citizen who did not ask can ignore it."""
    return (
        f"{signature}验证码{code}，用于将您的政务服务评价通知关联到 Telegram 账号，{minutes}分钟内有效。"
        "如非本人操作请忽略，切勿告知他人。"
    )


def too_many_codes(rating_url: str) -> str:
    return f"验证码发送次数过多，请明天再试。如需评价，请打开评价页面：{rating_url}"


def unverifiable(rating_url: str) -> str:
    return f"该手机号已退订短信，无法发送验证码，不能关联本账号。如需评价，请打开评价页面：{rating_url}"


def code_wrong(attempts_left: int) -> str:
    return f"验证码不正确，请核对短信后重新回复（还可尝试{attempts_left}次）。"


CODE_FAILED = "验证码错误次数过多，本次关联已取消。如需关联，请重新点击评价短信中的链接。"
CODE_EXPIRED = "验证码已过期，请重新点击评价短信中的链接获取新的验证码。"

EDITED = "已发出的消息修改后不会重新处理，已记录的评价也不能修改。如需补充，请直接发送新消息。"

MY_EMPTY = "您还没有评价记录。"
MY_HEADER = "您最近的评价："
MY_REPLY = "答复"
MY_TICKET = "差评办理"

# What a citizen sees of a work order's status (gateway.tickets.workflow); unknown ones read as 办理中.
TICKET_STATUS = {
    "dispatching": "已转有关部门",
    "transferred": "已转承办单位",
    "accepted": "承办单位已受理",
    "in_progress": "整改中",
    "extension_requested": "整改中",
    "appealed": "复核中",
    "resolved": "已整改并答复",
    "callback_unsatisfied": "回访不满意，复核中",
    "closed_satisfied": "已办结",
    "closed_unsatisfied": "已办结",
    "closed_no_answer": "已办结",
    "closed_invalid": "已办结（经申诉复核）",
}
TICKET_OPEN = ("dispatching", "transferred", "accepted", "in_progress", "extension_requested", "appealed")
TICKET_STATUS_UNKNOWN = "办理中"


def chosen(labels: list[str]) -> str:
    """The line that replaces an answered keyboard."""
    return f"已选择：{'、'.join(labels)}" if labels else "已提交"
