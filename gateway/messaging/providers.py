"""The provider interface the dispatcher sends through, and the console provider (the default)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.privacy import mask_phone

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outgoing:
    """One message ready to leave: the address is resolved (decrypted) only at dispatch time."""

    message_id: int
    channel: str  # sms | telegram
    to: str  # E.164 number for sms, chat id for telegram
    body: str
    buttons: list[Any] | None = None  # rows of {"text", "data"} for the bot
    status_callback: str | None = None
    edit_message_id: int | None = None


@dataclass(frozen=True)
class Sent:
    provider_message_id: str | None
    status: str = "sent"


class SendFailed(Exception):
    """A provider refused or could not take a message.

    permanent: retrying cannot help (invalid number, unsubscribed); the message fails for good.
    opt_out: the provider says the recipient opted out or blocked us; record it.
    retry_after_seconds: the provider's own hint (HTTP 429 Retry-After, Telegram retry_after).
    """

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        permanent: bool = False,
        opt_out: bool = False,
        retry_after_seconds: float | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code
        self.permanent = permanent
        self.opt_out = opt_out
        self.retry_after_seconds = retry_after_seconds


class Provider(Protocol):
    channel: str

    async def send(self, message: Outgoing) -> Sent: ...


@dataclass
class ConsoleProvider:
    """Keeps sent SMS in memory and prints them, masked: the embedded default and the demo's."""

    channel: str = "sms"
    echo: bool = True
    sent: list[Outgoing] = field(default_factory=list)

    async def send(self, message: Outgoing) -> Sent:
        self.sent.append(message)
        if self.echo:
            log.info("console %s to %s: %s", message.channel, _mask(message), message.body)
        return Sent(provider_message_id=f"console-{message.message_id}", status="delivered")


def _mask(message: Outgoing) -> str:
    return mask_phone(message.to) if message.channel == "sms" else f"chat {message.to}"
