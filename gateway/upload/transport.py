"""What the upload feed needs of the provincial platform: a `Transport` that sends the mapped records
and answers a `Delivery` the feed records, and reads the province's own counts.

The HTTP transport is `gateway.province.client.ProvinceClient` (one signed POST per request, and what
its answer means); `ConsoleProvince` (GATEWAY_PROVINCE_BASE_URL=console, the demo's) prints each
request and accepts it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal, Protocol

from gateway.upload.mapping import request_body
from gateway.upload.profile import ProvinceProfile

log = logging.getLogger(__name__)

# accepted: the province took the request's records. retry: nothing is wrong with the records (a time-out,
# a 5xx, a 429, our own credentials refused): try again later. rejected: the province refused the record
# itself (a 4xx, or a 2xx carrying an error code) and said why: set it aside with its words.
Outcome = Literal["accepted", "retry", "rejected"]


@dataclass(frozen=True)
class Delivery:
    outcome: Outcome
    code: str | None = None
    detail: str = ""
    retry_after_seconds: float | None = None


@dataclass(frozen=True)
class ProvinceCount:
    """One row of the province's own count for a day, in the province's codes."""

    channel: str
    level: str
    count: int


class Transport(Protocol):
    async def send(self, payloads: list[dict[str, Any]]) -> Delivery: ...

    async def counts(self, day: date) -> list[ProvinceCount] | None: ...


class CountsUnavailable(Exception):
    """The province's count endpoint could not be read."""


@dataclass
class ConsoleProvince:
    """Prints each request's body and accepts it: for the demo and for trying a profile out."""

    profile: ProvinceProfile
    echo: bool = True
    received: list[bytes] = field(default_factory=list)

    async def send(self, payloads: list[dict[str, Any]]) -> Delivery:
        body = request_body(payloads, self.profile)
        self.received.append(body)
        if self.echo:
            log.info("console province: %s", body.decode("utf-8"))
        return Delivery("accepted")

    async def counts(self, day: date) -> list[ProvinceCount] | None:
        return None
