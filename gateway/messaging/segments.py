"""SMS segment counting (GSM-7 and UCS-2) and fitting a prompt within a segment budget.

DESIGN.md §2 keeps every SMS within two segments. A text that uses only the GSM 03.38 alphabet is sent
as GSM-7: 160 septets in one segment, 153 per segment once concatenated (the user-data header takes
the rest). Anything else, Chinese included, is sent as UCS-2: 70 UTF-16 units alone, 67 per segment
concatenated. Characters outside the Basic Multilingual Plane (most emoji) take two UTF-16 units, and
GSM-7 extension characters (€, [, ], {, }, …) take two septets; neither is split across two segments.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal

GSM7_SINGLE = 160
GSM7_MULTI = 153
UCS2_SINGLE = 70
UCS2_MULTI = 67
ELLIPSIS = "…"

# GSM 03.38 basic character set (without the escape code 0x1B).
_GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Extension table: each is sent as escape + character, two septets.
_GSM7_EXTENDED = frozenset("\f^{}\\[~]|€")


def is_gsm7(text: str) -> bool:
    """True when every character of the text can be sent in the GSM-7 alphabet."""
    return all(ch in _GSM7_BASIC or ch in _GSM7_EXTENDED for ch in text)


def encoding(text: str) -> Literal["GSM-7", "UCS-2"]:
    """The encoding a handset or gateway would choose for this text."""
    return "GSM-7" if is_gsm7(text) else "UCS-2"


def units(text: str) -> int:
    """Length in the encoding's units: septets for GSM-7, UTF-16 code units for UCS-2."""
    return _units(text, is_gsm7(text))


def segments(text: str) -> int:
    """How many SMS segments the text takes (an empty text still takes one)."""
    gsm7 = is_gsm7(text)
    single, multi = (GSM7_SINGLE, GSM7_MULTI) if gsm7 else (UCS2_SINGLE, UCS2_MULTI)
    length = _units(text, gsm7)
    if length <= single:
        return 1
    if length == len(text):  # one unit a character: no character to keep whole
        return -(-length // multi)
    return _pack(_weights(text, gsm7), single, multi)


def fit(render: Callable[[str], str], item_name: str, max_segments: int = 2) -> str:
    """Render the text with the item name, shortening only the name with "…" until it fits.

    `render` builds the whole message around a name (signature, link and all); nothing but the name
    is ever cut, so a link in the text stays whole. Raises ValueError when even an empty name does
    not fit, which means the template itself is too long.
    """
    if max_segments < 1:
        raise ValueError("max_segments must be at least 1")
    text = render(item_name)
    if segments(text) <= max_segments:
        return text
    # Longest prefix first; a few hundred renders at most, each cheap.
    for keep in range(len(item_name) - 1, 0, -1):
        shortened = item_name[:keep].rstrip()
        if not shortened:
            continue
        text = render(shortened + ELLIPSIS)
        if segments(text) <= max_segments:
            return text
    text = render("")
    if segments(text) <= max_segments:
        return text
    raise ValueError(
        f"the message does not fit in {max_segments} SMS segment(s) even without the item name "
        f"({units(text)} {encoding(text)} units)"
    )


def first_fitting(candidates: Iterable[str], max_segments: int = 2) -> str:
    """The first text that fits `max_segments` (renderings of one message, longest names first); the
    last one when none does. Raises ValueError when there is no candidate."""
    text: str | None = None
    for text in candidates:
        if segments(text) <= max_segments:
            return text
    if text is None:
        raise ValueError("no text to fit")
    return text


def _units(text: str, gsm7: bool) -> int:
    if gsm7:
        return len(text) + sum(text.count(ch) for ch in _GSM7_EXTENDED)
    return len(text.encode("utf-16-le")) // 2


def _weights(text: str, gsm7: bool) -> list[int]:
    if gsm7:
        return [2 if ch in _GSM7_EXTENDED else 1 for ch in text]
    return [2 if ord(ch) > 0xFFFF else 1 for ch in text]


def _pack(weights: list[int], single: int, multi: int) -> int:
    """Count segments, never splitting a two-unit character between two of them."""
    if sum(weights) <= single:
        return 1
    count, used = 1, 0
    for weight in weights:
        if used + weight > multi:
            count, used = count + 1, 0
        used += weight
    return count
