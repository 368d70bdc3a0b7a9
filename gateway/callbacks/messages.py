"""The callback question as it leaves: a neutral question (Art. 15(五)), within two SMS segments."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from conversations import SurveyRef, button_label, plain_text, survey_prompt
from gateway.messaging.segments import first_fitting, segments

OPT_OUT_HINT = "，回T退订"


def survey_message(
    *, channel: str, signature: str, ticket_id: int, item_name: str, at: datetime
) -> tuple[str, list[Any] | None]:
    """(body, buttons) of the survey for a channel.

    The text is the conversation's own question, so the reply grammar and the `sv:` buttons match what
    the flow reads. The bot's message also lists the typed choices: if the citizen has blocked the bot,
    the dispatcher sends the same body by SMS instead, and it must still say what to reply.
    """
    reply = survey_prompt(SurveyRef(ticket_id=ticket_id, item_name=item_name, sent_at=at))
    if channel == "telegram":
        return plain_text(reply), [[{"text": button_label(choice), "data": choice.data} for choice in reply.choices]]
    renderings = (reply, *reply.shorter)
    # The opt-out hint if it fits with the whole question (names shortened as needed); a long operator
    # signature leaves it out: the question and its choices come first.
    body = first_fitting(f"{signature}{plain_text(r)}{OPT_OUT_HINT}" for r in renderings)
    if segments(body) > 2:
        body = first_fitting(f"{signature}{plain_text(r)}" for r in renderings)
    return body, None
