"""The daily reconciliation: what we sent and the province acknowledged for a local day, against the
province's own counts when its profile has a count endpoint (DESIGN §6)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from gateway.store.db import Store
from gateway.upload.feed import Tally, day_counts
from gateway.upload.profile import ProvinceProfile
from gateway.upload.transport import Transport


@dataclass(frozen=True)
class Gap:
    """A (channel, level) in the province's codes where its count differs from our acknowledged one."""

    channel: str
    level: str
    acknowledged: int
    province: int

    @property
    def missing(self) -> int:
        """Positive: acknowledged by the province but not in its counts; negative: more there than here."""
        return self.acknowledged - self.province


@dataclass
class Reconciliation:
    day: date
    rows: dict[tuple[int, str], Tally]
    compared: bool = False  # the province's counts were read
    gaps: list[Gap] = field(default_factory=list)

    @property
    def total(self) -> Tally:
        total = Tally()
        for tally in self.rows.values():
            total.recorded += tally.recorded
            total.sent += tally.sent
            total.acknowledged += tally.acknowledged
            total.failed += tally.failed
        return total


async def reconcile(store: Store, profile: ProvinceProfile, transport: Transport, day: date) -> Reconciliation:
    """Count our side for the day; compare with the province's count endpoint if there is one."""
    rows = await day_counts(store, day, profile.times.timezone)
    result = Reconciliation(day=day, rows=rows)
    theirs = await transport.counts(day)
    if theirs is None:
        return result
    result.compared = True
    # Several of our channels may share one province code (the link, the app and the bot are all 移动端).
    ours: dict[tuple[str, str], int] = {}
    for (level, channel), tally in rows.items():
        key = (profile.channel_code(channel), str(profile.level_code(level)))
        ours[key] = ours.get(key, 0) + tally.acknowledged
    province: dict[tuple[str, str], int] = {}
    for row in theirs:
        province[(row.channel, row.level)] = province.get((row.channel, row.level), 0) + row.count
    for key in sorted(set(ours) | set(province)):
        if ours.get(key, 0) != province.get(key, 0):
            result.gaps.append(
                Gap(channel=key[0], level=key[1], acknowledged=ours.get(key, 0), province=province.get(key, 0))
            )
    return result
