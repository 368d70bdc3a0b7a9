"""The domain's collaborators, built once from settings and handed to services explicitly."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.clock import Clock, SystemClock
from gateway.evaluations.reasons import Catalogue
from gateway.messaging.quiet import QuietHours
from gateway.privacy import PhoneVault
from gateway.settings import Settings
from gateway.tickets.calendar import WorkingCalendar


@dataclass
class Deps:
    settings: Settings
    clock: Clock
    calendar: WorkingCalendar
    vault: PhoneVault
    catalogue: Catalogue
    quiet: QuietHours

    @classmethod
    def build(cls, settings: Settings, clock: Clock | None = None) -> Deps:
        return cls(
            settings=settings,
            clock=clock or SystemClock(),
            calendar=WorkingCalendar(settings.calendar_file, timezone=settings.timezone),
            vault=PhoneVault(settings.effective_secret),
            catalogue=Catalogue.load(),
            quiet=QuietHours(settings.quiet_window, settings.timezone),
        )

    def rating_url(self, token: str) -> str:
        return f"{self.settings.public_url}/r/{token}"
