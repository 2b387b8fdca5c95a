"""Every change to a job's credits: reserve -> capture | release, and staff refunds.

Built on billing.services.ledger (conditional updates, idempotency keys, lock order job ->
wallet, events on commit); see docs/billing.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import transaction

from billing.models import EntryKind, LedgerEntry
from billing.services.ledger import (
    AlreadyRecorded,
    job_hold,
    key_exists,
    lock_job,
    lock_wallet,
    move,
    wallet_get_or_create_for_user,
)

if TYPE_CHECKING:
    from generation.models import Job


# --- jobs ----------------------------------------------------------------------------------------


@transaction.atomic
def credits_reserve(*, job: Job, amount: int) -> None:
    """Move `amount` from the payer's available credits to held, for this job.

    Call it in the transaction that creates the job: InsufficientCredits rolls both back.
    A zero amount records nothing. Calling it twice for one job reserves once.
    """
    if amount < 0:
        raise ValueError("amount must be >= 0")
    if amount == 0:
        return
    key = f"reserve:{job.pk}"
    if key_exists(key):
        return
    wallet = wallet_get_or_create_for_user(user=job.user)
    move(
        wallet_id=wallet.pk,
        kind=EntryKind.RESERVE,
        amount=amount,
        available_delta=-amount,
        held_delta=amount,
        idempotency_key=key,
        reason="Reserved for a job",
        job=job,
    )


@transaction.atomic
def credits_capture(*, job: Job, amount: int) -> None:
    """The job succeeded: spend `amount` of its hold and release the rest. Idempotent.

    A job whose hold was already captured or released is left alone; a job with no hold
    (free job) needs `amount == 0`.
    """
    if amount < 0:
        raise ValueError("amount must be >= 0")
    reserve, _ = job_hold(job)
    if reserve is None:
        if amount:
            raise ValueError(f"Job {job.pk} has no reservation to capture {amount} credits from")
        return
    lock_job(job)
    lock_wallet(reserve.wallet_id)
    _, settled = job_hold(job)  # re-check under the lock
    if settled:
        return
    if amount > reserve.amount:
        raise ValueError(f"Cannot capture {amount} credits: job {job.pk} holds {reserve.amount}")
    if amount:
        move(
            wallet_id=reserve.wallet_id,
            kind=EntryKind.CAPTURE,
            amount=amount,
            available_delta=0,
            held_delta=-amount,
            idempotency_key=f"capture:{job.pk}",
            reason="Spent on a job",
            job=job,
        )
    rest = reserve.amount - amount
    if rest or not amount:
        # Always record one settling entry, so a later capture/release is a no-op.
        move(
            wallet_id=reserve.wallet_id,
            kind=EntryKind.RELEASE,
            amount=rest,
            available_delta=rest,
            held_delta=-rest,
            idempotency_key=f"release:{job.pk}",
            reason="Not produced: released" if amount else "Nothing produced: released",
            job=job,
        )


@transaction.atomic
def credits_release(*, job: Job, reason: str) -> None:
    """The job failed, was cancelled or lost its worker: give its whole hold back. Idempotent.

    A no-op when the job has no hold or it was already captured or released.
    """
    reserve, settled = job_hold(job)
    if reserve is None or settled:
        return
    lock_job(job)
    lock_wallet(reserve.wallet_id)
    _, settled = job_hold(job)
    if settled:
        return
    move(
        wallet_id=reserve.wallet_id,
        kind=EntryKind.RELEASE,
        amount=reserve.amount,
        available_delta=reserve.amount,
        held_delta=-reserve.amount,
        idempotency_key=f"release:{job.pk}",
        reason=reason or "Released",
        job=job,
    )


@transaction.atomic
def credits_refund_job(*, job: Job, actor, reason: str) -> LedgerEntry:
    """Staff: give back what a finished job was charged. Once per job."""
    if not reason.strip():
        raise ValueError("A reason is required.")
    capture = LedgerEntry.objects.filter(idempotency_key=f"capture:{job.pk}").first()
    if capture is None:
        raise ValueError("This job was not charged: there is nothing to refund.")
    lock_job(job)
    lock_wallet(capture.wallet_id)
    key = f"refund:{job.pk}"
    if key_exists(key):
        raise AlreadyRecorded("This job was refunded already.")
    return move(
        wallet_id=capture.wallet_id,
        kind=EntryKind.REFUND,
        amount=capture.amount,
        available_delta=capture.amount,
        held_delta=0,
        idempotency_key=key,
        actor=actor,
        reason=reason.strip(),
        job=job,
    )
