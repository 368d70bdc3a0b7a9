"""Domain errors of callback campaigns; the HTTP edge and the CLI translate them."""

from __future__ import annotations

from gateway.errors import DomainError


class CampaignError(DomainError):
    """Base of the campaign errors."""


class CampaignNotFound(CampaignError):
    """No such campaign, or another department's (the two answers are the same on purpose)."""

    status = 404
    code = "not_found"

    def __init__(self, campaign_id: int | None = None) -> None:
        what = f"campaign {campaign_id}" if campaign_id is not None else "the campaign"
        super().__init__(f"{what} does not exist or belongs to another department")


class TargetNotFound(CampaignError):
    status = 404
    code = "not_found"


class CampaignForbidden(CampaignError):
    status = 403
    code = "forbidden"


class CampaignConflict(CampaignError):
    """The request does not apply in the campaign's (or the target's) current status."""

    status = 409
    code = "transition_not_allowed"


class CampaignInvalid(CampaignError):
    status = 422
    code = "invalid"


class NoTargets(CampaignInvalid):
    """Nothing to survey: no resolved ticket awaiting a callback matched."""

    code = "no_targets"
