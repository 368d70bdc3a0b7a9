"""What follows the writing of an evaluation record, in the writer's own transaction.

An evaluation, an addendum (reasons, a staff rating) and a decision (an appeal or fraud ruling) are
the records that statistics count and the provincial platform receives (Art. 18, 19). Every place
that writes one calls `record_written` right after flushing it, so whatever must accompany such a
record (the tamper-evident evaluation log, the upload feed) is added in one place and commits or
rolls back with it.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Literal

from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.audit.log import queue_record
from gateway.store.models import Evaluation, EvaluationAddendum, EvaluationDecision

if TYPE_CHECKING:
    from gateway.deps import Deps
    from gateway.stats.rollup import Stored

RecordKind = Literal["evaluation", "addendum", "decision"]
Record = Evaluation | EvaluationAddendum | EvaluationDecision


async def record_written(
    session: AsyncSession,
    *,
    kind: RecordKind,
    record: Record,
    deps: Deps,
    at: datetime,
    stored: Stored | None = None,
) -> None:
    """Called once per evaluation record, after it is flushed (it has its id), before the commit.
    `stored`: the evaluation's addenda and rulings as stored now (the record among them), when the
    caller has read them in this transaction (read here otherwise)."""
    if record.id is None:
        raise ValueError(f"flush the {kind} before record_written: it has no id yet")
    # The evaluation log (Art. 19): appended from the stored row when this transaction commits.
    queue_record(session, kind=kind, record=record, at=at)

    if deps.settings.province is not None:  # no profile configured: nothing is queued for upload
        from gateway.upload.records import queue_upload

        evaluation_id = record.id if isinstance(record, Evaluation) else record.evaluation_id
        change = record.kind if isinstance(record, EvaluationAddendum) else kind
        await queue_upload(session, evaluation_id=evaluation_id, change=change, at=at)

    # The statistics' roll-ups move with the record (docs/statistics.md).
    from gateway.stats.rollup import record_changed

    await record_changed(session, kind=kind, record=record, calendar=deps.calendar, stored=stored)
