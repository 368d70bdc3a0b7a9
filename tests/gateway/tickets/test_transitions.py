"""Every action from every status, through the API on both backends: allowed moves answer 200 and land in
the documented status; every other move answers 409 and leaves the ticket as it was."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.tickets.workflow import RULES, STATUSES
from tests.gateway.tickets.helpers import Api

APPROVAL, UNIT = "hanbin", "hanbin-market"

# A valid body for each action, and who takes it (the approval department or the handling unit).
BODIES: dict[str, tuple[str, dict[str, Any]]] = {
    "transfer": (APPROVAL, {"unit": "hanbin-tax"}),
    "accept": (UNIT, {"category": "general"}),
    "classify": (UNIT, {"category": "general"}),
    "contact": (UNIT, {"method": "phone", "outcome": "called the evaluator, explained the rectification"}),
    "request_extension": (UNIT, {"working_days": 3, "reason": "needs a joint inspection"}),
    "decide_extension": (APPROVAL, {"decision": "approve"}),
    "appeal": (UNIT, {"grounds": "mistaken", "evidence": "the applicant rated the wrong office"}),
    "decide_appeal": (APPROVAL, {"decision": "valid"}),
    "consult": (APPROVAL, {"orgs": ["hanbin-tax"]}),
    "resolve": (UNIT, {"rectification": "retrained the window staff", "reply": "已整改，感谢监督。"}),
    "callback_result": (APPROVAL, {"outcome": "satisfied"}),
    "redo": (APPROVAL, {"reason": "the rectification did not address the complaint"}),
    "close": (APPROVAL, {"reason": "the evaluator's wish is outside the unit's remit"}),
}

# How to bring a new ticket to each status.
PATHS: dict[str, list[tuple[str, str, dict[str, Any]]]] = {
    "dispatching": [],
    "transferred": [(APPROVAL, "transfer", {})],
    "accepted": [(APPROVAL, "transfer", {}), (UNIT, "accept", {})],
    "in_progress": [(APPROVAL, "transfer", {}), (UNIT, "accept", {"category": "general"})],
}
PATHS["extension_requested"] = PATHS["in_progress"] + [(UNIT, "request_extension", BODIES["request_extension"][1])]
PATHS["appealed"] = PATHS["in_progress"] + [(UNIT, "appeal", BODIES["appeal"][1])]
PATHS["resolved"] = PATHS["in_progress"] + [(UNIT, "resolve", BODIES["resolve"][1])]
PATHS["callback_unsatisfied"] = PATHS["resolved"] + [(APPROVAL, "callback_result", {"outcome": "unsatisfied"})]
PATHS["closed_satisfied"] = PATHS["resolved"] + [(APPROVAL, "callback_result", {"outcome": "satisfied"})]
PATHS["closed_no_answer"] = PATHS["resolved"] + [(APPROVAL, "callback_result", {"outcome": "no_answer"})]
PATHS["closed_unsatisfied"] = PATHS["callback_unsatisfied"] + [(APPROVAL, "close", BODIES["close"][1])]
PATHS["closed_invalid"] = PATHS["appealed"] + [(APPROVAL, "decide_appeal", {"decision": "invalid", "reason": "rated the wrong office"})]

# Where each allowed move leads, by (action, from status).
EXPECTED = {
    ("transfer", "dispatching"): "transferred",
    ("transfer", "transferred"): "transferred",
    ("transfer", "accepted"): "transferred",
    ("transfer", "in_progress"): "transferred",
    ("accept", "transferred"): "in_progress",
    ("classify", "accepted"): "in_progress",
    ("contact", "accepted"): "accepted",
    ("contact", "in_progress"): "in_progress",
    ("contact", "extension_requested"): "extension_requested",
    ("request_extension", "in_progress"): "extension_requested",
    ("decide_extension", "extension_requested"): "in_progress",
    ("appeal", "accepted"): "appealed",
    ("appeal", "in_progress"): "appealed",
    ("decide_appeal", "appealed"): "in_progress",
    ("consult", "dispatching"): "dispatching",
    ("consult", "transferred"): "transferred",
    ("consult", "accepted"): "accepted",
    ("consult", "in_progress"): "in_progress",
    ("consult", "extension_requested"): "extension_requested",
    ("resolve", "accepted"): "resolved",
    ("resolve", "in_progress"): "resolved",
    ("resolve", "extension_requested"): "resolved",
    ("callback_result", "resolved"): "closed_satisfied",
    ("redo", "callback_unsatisfied"): "in_progress",
    ("close", "callback_unsatisfied"): "closed_unsatisfied",
}


def test_the_table_matches_the_rules() -> None:
    assert set(PATHS) == set(STATUSES)
    assert set(BODIES) == set(RULES)
    from_rules = {(action, status) for action, rule in RULES.items() for status in rule.sources}
    assert from_rules == set(EXPECTED)


async def _ticket_in(api: Api, make_ticket, status: str) -> int:  # type: ignore[no-untyped-def]
    ticket_id = await make_ticket()
    for org, action, body in PATHS[status]:
        await api.ok(org, ticket_id, action, **body)
    assert (await api.ticket(APPROVAL, ticket_id))["status"] == status
    return ticket_id


@pytest.mark.parametrize("status", STATUSES)
async def test_every_action_from(status: str, api: Api, make_ticket) -> None:  # type: ignore[no-untyped-def]
    refused_ticket = await _ticket_in(api, make_ticket, status)
    before = await api.ticket(APPROVAL, refused_ticket)
    for action, (org, body) in BODIES.items():
        if (action, status) in EXPECTED:
            ticket_id = await _ticket_in(api, make_ticket, status)
            after = await api.ok(org, ticket_id, action, **body)
            assert after["status"] == EXPECTED[(action, status)], action
            assert after["events"][-1]["action"] == action
            assert after["events"][-1]["from_status"] == status
            assert after["events"][-1]["actor"] == org
        else:
            code, answer = await api.act(org, refused_ticket, action, **body)
            assert code == 409, (action, answer)
            assert answer["error"]["code"] == "transition_not_allowed"
            assert f"the ticket is {status}" in answer["error"]["message"]
            assert answer["error"]["details"] == {"status": status}  # where the ticket is, for the client
    after = await api.ticket(APPROVAL, refused_ticket)
    assert after["version"] == before["version"] and after["events"] == before["events"]


async def test_allowed_actions_are_listed_for_the_caller(api: Api, make_ticket) -> None:  # type: ignore[no-untyped-def]
    ticket_id = await make_ticket()
    assert (await api.ticket(APPROVAL, ticket_id))["allowed_actions"] == ["transfer", "consult"]
    assert (await api.ticket(UNIT, ticket_id))["allowed_actions"] == []
    await api.transferred(ticket_id)
    assert (await api.ticket(UNIT, ticket_id))["allowed_actions"] == ["accept"]
    assert (await api.ticket("city", ticket_id))["allowed_actions"] == []
