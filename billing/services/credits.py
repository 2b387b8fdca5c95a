"""Every change to held credits: reserve -> capture | release, and staff refunds.

A hold is keyed by its subject, an opaque `<kind>:<id>` string chosen by the spender
(generation uses `job:<uuid>`; a fine-tune or an API call can bring its own kind). Billing never
looks the subject up: whoever spends passes the payer and the amounts.

Built on billing.services.ledger (conditional updates, idempotency keys, wallet row locks,
events on commit); see docs/billing.md.
"""

from __future__ import annotations

from django.db import transaction

from billing.models import EntryKind, LedgerEntry
from billing.services.ledger import (
    AlreadyRecorded,
    key_exists,
    lock_wallet,
    move,
    subject_hold,
    wallet_get_or_create_for_user,
)
from billing.subjects import subject_check


@transaction.atomic
def credits_reserve(*, user, subject: str, amount: int) -> None:
    """Move `amount` from the user's available credits to held, for `subject`.

    Call it in the transaction that creates the subject (the job): InsufficientCredits rolls
    both back. A zero amount records nothing. Calling it twice for one subject reserves once.
    """
    subject_check(subject)
    if amount < 0:
        raise ValueError("amount must be >= 0")
    if amount == 0:
        return
    key = f"reserve:{subject}"
    if key_exists(key):
        return
    wallet = wallet_get_or_create_for_user(user=user)
    move(
        wallet_id=wallet.pk,
        kind=EntryKind.RESERVE,
        amount=amount,
        available_delta=-amount,
        held_delta=amount,
        idempotency_key=key,
        reason="Reserved",
        subject=subject,
    )


def _locked_open_hold(subject: str) -> LedgerEntry | None:
    """The subject's reserve entry if its hold is still open, with its wallet row locked."""
    reserve, settled = subject_hold(subject)
    if reserve is None or settled:
        return None
    lock_wallet(reserve.wallet_id)
    _, settled = subject_hold(subject)  # re-check under the lock
    return None if settled else reserve


@transaction.atomic
def credits_capture(*, subject: str, amount: int) -> None:
    """The work is done: spend `amount` of the hold and release the rest. Idempotent.

    A hold already captured or released is left alone; a subject with no hold (free work)
    needs `amount == 0`.
    """
    subject_check(subject)
    if amount < 0:
        raise ValueError("amount must be >= 0")
    reserve, _ = subject_hold(subject)
    if reserve is None:
        if amount:
            raise ValueError(f"{subject} has no reservation to capture {amount} credits from")
        return
    reserve = _locked_open_hold(subject)
    if reserve is None:
        return
    if amount > reserve.amount:
        raise ValueError(f"Cannot capture {amount} credits: {subject} holds {reserve.amount}")
    if amount:
        move(
            wallet_id=reserve.wallet_id,
            kind=EntryKind.CAPTURE,
            amount=amount,
            available_delta=0,
            held_delta=-amount,
            idempotency_key=f"capture:{subject}",
            reason="Spent",
            subject=subject,
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
            idempotency_key=f"release:{subject}",
            reason="Not produced: released" if amount else "Nothing produced: released",
            subject=subject,
        )


@transaction.atomic
def credits_release(*, subject: str, reason: str) -> None:
    """The work failed, was cancelled or lost its worker: give the whole hold back. Idempotent.

    A no-op when the subject has no hold or it was already captured or released.
    """
    subject_check(subject)
    reserve = _locked_open_hold(subject)
    if reserve is None:
        return
    move(
        wallet_id=reserve.wallet_id,
        kind=EntryKind.RELEASE,
        amount=reserve.amount,
        available_delta=reserve.amount,
        held_delta=-reserve.amount,
        idempotency_key=f"release:{subject}",
        reason=reason or "Released",
        subject=subject,
    )


@transaction.atomic
def credits_refund(*, subject: str, actor, reason: str) -> LedgerEntry:
    """Staff: give back what a subject (a finished job) was charged. Once per subject."""
    subject_check(subject)
    if not reason.strip():
        raise ValueError("A reason is required.")
    capture = LedgerEntry.objects.filter(subject=subject, kind=EntryKind.CAPTURE).first()
    if capture is None:
        raise ValueError(f"{subject} was not charged: there is nothing to refund.")
    lock_wallet(capture.wallet_id)
    key = f"refund:{subject}"
    if key_exists(key) or LedgerEntry.objects.filter(subject=subject, kind=EntryKind.REFUND).exists():
        raise AlreadyRecorded(f"{subject} was refunded already.")
    return move(
        wallet_id=capture.wallet_id,
        kind=EntryKind.REFUND,
        amount=capture.amount,
        available_delta=capture.amount,
        held_delta=0,
        idempotency_key=key,
        actor=actor,
        reason=reason.strip(),
        subject=subject,
    )
