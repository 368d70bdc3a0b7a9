"""The console's Chinese words: statuses, actions, and refusals explained in plain Chinese.

The rules themselves live in gateway.tickets.workflow and gateway.callbacks.service; this module only
says in Chinese what they decided (the error's class, field and the ticket's facts pick the sentence).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from gateway.callbacks.errors import CampaignConflict, CampaignError, CampaignForbidden, CampaignNotFound, NoTargets
from gateway.errors import DomainError
from gateway.store.models import Ticket
from gateway.tickets.errors import (
    DeadlinePassed,
    Forbidden,
    NoContact,
    StaleTicket,
    TicketNotFound,
    TransitionNotAllowed,
    ValidationFailed,
)
from gateway.tickets.workflow import RULES

STATUS = {
    "dispatching": "待转办",
    "transferred": "待签收",
    "accepted": "已签收待定性",
    "in_progress": "整改中",
    "extension_requested": "延期待审批",
    "appealed": "申诉待复核",
    "resolved": "已办结待回访",
    "callback_unsatisfied": "回访不满意待研判",
    "closed_satisfied": "已办结（回访满意）",
    "closed_unsatisfied": "已办结（回访不满意）",
    "closed_no_answer": "已办结（回访未答复）",
    "closed_invalid": "已办结（申诉成立，评价无效）",
}

ACTION = {
    "transfer": "转办",
    "accept": "签收",
    "classify": "定性",
    "contact": "联系评价人",
    "request_extension": "申请延期",
    "decide_extension": "审批延期",
    "appeal": "申诉",
    "decide_appeal": "复核申诉",
    "consult": "发起会商",
    "resolve": "办结答复",
    "callback_result": "记录回访结果",
    "redo": "发回重办",
    "close": "结案",
    "overdue": "超期",
    "created": "生成工单",
}

CATEGORY = {"simple": "立整立改（5个工作日）", "general": "限时整改（10个工作日）"}
RESPONSIBILITY = {"handling": "谁办理、谁负责", "platform": "谁建设、谁负责（平台问题）"}
EVALUATION_CHANNEL = {
    "web": "网页",
    "qr": "二维码",
    "sms": "短信",
    "bot": "Telegram",
    "evaluator": "评价器",
    "department": "部门系统",
    "phone": "电话",
    "app": "移动端",
}
SERVICE_CHANNEL = {"window": "窗口", "online": "网上", "self_service": "自助终端", "app": "移动端"}
ORG_KIND = {
    "operator": "平台运营方",
    "city_bureau": "市行政审批服务局",
    "county_dept": "县区行政审批部门",
    "unit": "承办单位",
    "platform_builder": "平台建设单位",
}
ROLE = {"clerk": "经办人", "supervisor": "科室负责人", "admin": "平台管理员"}
CAMPAIGN_STATUS = {
    "scheduled": "待开始",
    "running": "进行中",
    "paused": "已暂停",
    "cancelled": "已取消",
    "finished": "已完成",
}
CAMPAIGN_ACTION = {"pause": "暂停", "resume": "继续", "cancel": "取消"}
CONTACT_METHOD = {"phone": "电话", "sms": "短信", "visit": "上门", "other": "其他"}
GROUNDS = {"mistaken": "误评", "malicious": "恶意差评"}
APPEAL_DECISION = {"valid": "评价有效（继续整改）", "invalid": "评价无效", "malicious": "恶意差评"}
EXTENSION_DECISION = {"approve": "同意", "deny": "不同意"}
CALLBACK_OUTCOME = {"satisfied": "满意", "unsatisfied": "不满意", "no_answer": "未答复"}
NOT_COUNTED = {"invalid": "申诉认定无效", "malicious": "认定恶意差评", "fraud": "认定刷评"}
FRAUD_RULE = {
    "burst": "同一评价人短时间内多次评价",
    "staff_rater": "评价人号码在工作人员名单中",
    "fast": "打开评价页或收到提示后数秒内即提交",
    "device": "同一设备评价多次",
    "address": "同一网络地址评价多次",
    "staff_share": "窗口人员非常满意占比异常偏高",
    "targeted": "同一评价人集中差评同一窗口人员",
    "near_duplicate": "评价内容高度雷同",
}
# The evidence a rule records (gateway.fraud.detect), by key; a key not listed is shown as it is.
EVIDENCE = {
    "services": "评价的服务数",
    "threshold": "规则阈值",
    "window_minutes": "时间窗（分钟）",
    "window_hours": "时间窗（小时）",
    "window_days": "时间窗（天）",
    "first_at": "首次评价",
    "last_at": "末次评价",
    "scope": "名单范围",
    "matches": "匹配的工作人员",
    "seconds": "用时（秒）",
    "after": "计时起点",
    "threshold_seconds": "阈值（秒）",
    "channel": "渠道",
    "ratings": "评价数",
    "hash_prefix": "设备或地址标识（摘要前缀）",
    "bad_reviews": "差评数",
    "staff_id": "窗口人员工号",
    "staff_org": "窗口人员所在单位",
    "period": "统计月份",
    "fives": "非常满意数",
    "share": "非常满意占比",
    "wilson_lower": "占比的 Wilson 下界",
    "peers_median": "同类人员占比中位数",
    "robust_z": "稳健 z 值",
    "threshold_z": "z 值阈值",
    "peers": "同类人员数",
    "numbers": "涉及号码数",
    "threshold_numbers": "号码数阈值",
    "similarity": "相似度阈值",
    "sample": "内容示例（已脱敏）",
}
FLAG_STATUS = {"open": "待认定", "confirmed": "认定属实", "dismissed": "认定不属实"}
FLAG_NOT_FOUND = "该线索不存在，或不在本单位管辖范围内。"

FIELD = {
    "unit": "承办单位",
    "category": "办理类型",
    "method": "联系方式",
    "outcome": "联系情况",
    "working_days": "工作日数",
    "reason": "理由",
    "decision": "决定",
    "grounds": "申诉类型",
    "evidence": "证据说明",
    "orgs": "会商单位",
    "rectification": "整改情况",
    "reply": "答复内容",
    "note": "备注",
    "expected_version": "版本",
    "name": "活动名称",
    "resolved_from": "办结日期（起）",
    "resolved_to": "办结日期（止）",
    "region_code": "行政区划",
    "level": "评价等级",
    "ticket_ids": "工单",
    "starts_at": "开始时间",
}

NOT_FOUND = "工单不存在，或不在您的管辖范围内。"
STALE = "这张工单刚被他人处理过，页面上的信息已过时。请刷新页面，看清最新情况后再操作。"


def _guard_text(action: str, ticket: Ticket | None) -> str | None:
    """Why a rule's guard refused, read from the ticket's facts (the guard itself decided)."""
    if ticket is None:
        return None
    if action in ("transfer", "consult", "request_extension") and ticket.redo_count:
        return "工单已发回重办，须由原承办单位在5个工作日内整改，不再转办、会商或延期（第十五条第五项）。"
    if action == "request_extension" and ticket.extension_working_days:
        return f"本工单已延期 {ticket.extension_working_days} 个工作日，只能延期一次。"
    if action == "consult" and ticket.consultation:
        return "本工单已在会商中。"
    if action == "redo" and ticket.redo_count:
        return "发回重办只能一次（第十五条第五项），请直接结案。"
    return None


def refusal(exc: DomainError, *, action: str | None = None, ticket: Ticket | None = None) -> str:
    """A refusal in plain Chinese, for the person who tried."""
    verb = ACTION.get(action or "", "执行此操作")
    if isinstance(exc, TicketNotFound):
        return NOT_FOUND
    if isinstance(exc, StaleTicket):
        return STALE
    if isinstance(exc, Forbidden):
        if exc.field == "unit":
            return "所选单位不在本工单审批部门的管辖范围内，请选择本辖区的承办单位。"
        if (
            action == "contact"
            or exc.message.startswith("the number")
            or exc.message.startswith("only the handling unit reads")
        ):
            return "评价人完整号码只向承办单位提供，且仅在办理期间（签收后至办结前）可以查看。"
        if action and RULES.get(action) is not None and RULES[action].role == "approval":
            return f"只有持有本工单的审批部门可以{verb}（第十四条）。"
        return f"只有承接本工单的承办单位可以{verb}。"
    if isinstance(exc, DeadlinePassed):
        if action == "appeal":
            return "申诉须在收到工单后2个工作日内提出（第十五条第三项），已超过期限。"
        if action == "request_extension":
            return "延期须在收到工单后5个工作日内申请，已超过期限。"
        if exc.field == "category":
            return "收到工单已超过5个工作日，不能再定为立整立改，请定为限时整改。"
        return "已超过规定期限，不能再" + verb + "。"
    if isinstance(exc, TransitionNotAllowed):
        if exc.field == "unit":
            return "工单已在该单位，无需重复转办。"
        if action == "resolve" and exc.message.startswith("a simple"):
            return "立整立改工单须先记录联系评价人，才能办结。"
        guard = _guard_text(action or "", ticket)
        if guard:
            return guard
        status = (exc.details or {}).get("status") if isinstance(exc.details, dict) else None
        return f"工单当前为「{STATUS.get(status or '', status or '')}」，不能{verb}。请刷新页面查看最新情况。"
    if isinstance(exc, ValidationFailed):
        if exc.field == "reply" and isinstance(exc.details, dict) and "max_length" in exc.details:
            return f"评价人通过短信接收答复，答复须控制在两条短信内：请缩短到 {exc.details['max_length']} 字以内。"
        if exc.field == "unit":
            return "所选单位未登记，或不是承办单位／平台建设单位。"
        if exc.field == "orgs":
            return "会商单位中有未登记的单位代码。"
        if exc.field == "working_days":
            return "批准的延期天数不能超过申请的天数。"
        return f"{FIELD.get(exc.field or '', '输入')}有误。"
    if isinstance(exc, NoContact):
        return "评价人没有留下电话号码，请通过办结答复回复评价人。"
    if isinstance(exc, CampaignError):
        return campaign_refusal(exc, action=action)
    return "操作未完成：" + exc.message


def campaign_refusal(exc: CampaignError, *, action: str | None = None) -> str:
    if isinstance(exc, CampaignNotFound):
        return "回访活动不存在，或不属于您的单位。"
    if isinstance(exc, CampaignForbidden):
        return "回访活动由审批部门（市行政审批服务局或县区行政审批部门）发起（第十五条第五项）。"
    if isinstance(exc, NoTargets):
        return "没有符合条件的工单：回访只针对本辖区内已办结、等待回访且未在其他回访中的工单。"
    if isinstance(exc, CampaignConflict):
        status = (exc.details or {}).get("status") if isinstance(exc.details, dict) else None
        verb = CAMPAIGN_ACTION.get(action or "", "执行此操作")
        return f"回访活动当前为「{CAMPAIGN_STATUS.get(status or '', status or '')}」，不能{verb}。"
    return f"{FIELD.get(exc.field or '', '输入')}有误。"


def validation_text(exc: ValidationError, *, prefix: str | None = None) -> tuple[str, str | None]:
    """The first fault of a form, in Chinese, and the field it names."""
    err = exc.errors(include_url=False, include_input=False)[0]
    loc = [str(p) for p in err["loc"]]
    if prefix and loc and loc[0] == prefix:
        loc = loc[1:]
    field = loc[0] if loc else None
    name = FIELD.get(field or "", field or "输入")
    kind = err["type"]
    ctx: dict[str, Any] = err.get("ctx") or {}
    if kind in ("missing", "string_too_short") or (kind == "too_short" and field):
        return f"请填写「{name}」。", field
    if kind in ("string_too_long", "too_long"):
        return f"「{name}」过长（最多 {ctx.get('max_length', '')} 字）。", field
    if kind in ("greater_than_equal", "less_than_equal", "int_parsing", "int_type"):
        return f"「{name}」须为有效的数字。", field
    if kind == "value_error" and "reason" in str(err.get("msg", "")):
        return "认定评价无效或恶意，须写明理由。", "reason"
    if kind == "value_error" and "working_days" in str(err.get("msg", "")):
        return "不同意延期时不填写天数。", "working_days"
    if kind == "value_error" and "resolved_from" in str(err.get("msg", "")):
        return "起始日期晚于截止日期。", field
    if kind == "string_pattern_mismatch":
        return f"「{name}」格式不正确。", field
    return f"「{name}」有误。", field
