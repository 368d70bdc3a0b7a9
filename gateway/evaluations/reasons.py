"""The preset reason catalogue (DESIGN.md §4): data, loaded from JSON so a province can replace it."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from conversations.model import ReasonOption

DEFAULT_FILE = Path(__file__).with_name("reasons.json")

LEVEL_WORDS = {5: "非常满意", 4: "满意", 3: "基本满意", 2: "不满意", 1: "非常不满意"}
BAD_LEVELS = frozenset({1, 2})


@dataclass(frozen=True)
class Reason:
    code: int
    level: int
    label: str
    short: str
    platform: bool = False
    staff: bool = False


class UnknownReason(ValueError):
    """A reason code that is not in the catalogue, or not for that level."""


class Catalogue:
    def __init__(self, reasons: Iterable[Reason]) -> None:
        self._by_code = {r.code: r for r in reasons}

    @classmethod
    def load(cls, path: Path | None = None) -> Catalogue:
        data = json.loads((path or DEFAULT_FILE).read_text(encoding="utf-8"))
        return cls(Reason(**{k: v for k, v in item.items()}) for item in data["reasons"])

    def get(self, code: int) -> Reason | None:
        return self._by_code.get(code)

    def for_level(self, level: int) -> list[Reason]:
        return [r for r in self._by_code.values() if r.level == level]

    def options(self, level: int) -> tuple[ReasonOption, ...]:
        """The level's reasons as the conversations package sees them."""
        return tuple(ReasonOption(code=r.code, label=r.label, short=r.short) for r in self.for_level(level))

    def check(self, level: int, codes: Iterable[int]) -> list[int]:
        """Validate codes for a level; returns them sorted and unique."""
        result = sorted(set(codes))
        for code in result:
            reason = self._by_code.get(code)
            if reason is None:
                raise UnknownReason(f"reason code {code} is not in the catalogue")
            if reason.level != level:
                raise UnknownReason(f"reason code {code} belongs to level {reason.level}, not {level}")
        return result

    def is_platform(self, codes: Iterable[int]) -> bool:
        """True when the reasons are all about the platform (谁建设、谁负责, Art. 15)."""
        reasons = [self._by_code[c] for c in codes if c in self._by_code]
        return bool(reasons) and all(r.platform for r in reasons)
