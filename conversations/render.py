"""Turning a Reply into what a channel shows: plain text for SMS, labels for the bot's buttons."""

from __future__ import annotations

from conversations.model import Choice, Reply

_INLINE_LABEL_CHARS = 8  # short labels go on one line; longer ones (services) one per line


def plain_text(reply: Reply) -> str:
    """The message for a channel without buttons: the text, then the choices a citizen can type."""
    typed = [c for c in reply.choices if c.key]
    if not typed:
        return reply.text
    separator = "\n" if any(len(c.label) > _INLINE_LABEL_CHARS for c in typed) else " "
    return reply.text + "\n" + separator.join(f"{c.key}.{c.label}" for c in typed)


def button_label(choice: Choice, multi_select: bool = False) -> str:
    """A button's caption; in a multi-select list a tick shows what is selected."""
    label = f"{choice.key} {choice.label}" if choice.key else choice.label
    if multi_select and choice.key:
        return ("✅ " if choice.selected else "") + label
    return label


__all__ = ["button_label", "plain_text"]
