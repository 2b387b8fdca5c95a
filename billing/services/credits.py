"""Every change to a wallet: reserve -> capture | release, grants, refunds, admin adjustments.

Rules kept by every function here (see docs/billing.md):
- one ledger entry per movement, with a unique idempotency key; a repeated call finds its key
  and does nothing;
- the cached balances move in the same transaction as the entry, by a conditional UPDATE
  (`available = available - n WHERE available >= n`) so no interleaving can overdraw; the
  CHECK constraints on Wallet are the backstop;
- anything that touches a job's hold first locks the wallet row (select_for_update; SQLite's
  IMMEDIATE transactions serialize writers anyway), so "is it already captured?" and "capture
  it" cannot interleave;
- the live header balance is pushed after commit (billing.events).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import IntegrityError, transaction
from django.db.models import F

from billing import events
from billing.models import EntryKind, LedgerEntry, Payment, Wallet

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from generation.models import Job


class InsufficientCredits(Exception):
    """Not enough available credits. The message is fit to show the user."""

    def __init__(self, *, needed: int, available: int):
        self.needed = needed
        self.available = available
        super().__init__(f"Not enough credits: this needs {needed}, you have {available}.")


class AlreadyRecorded(Exception):
    """A movement with this idempotency key exists already (raised only where that is an error)."""


# --- internals -----------------------------------------------------------------------------------


def wallet_get_or_create_for_user(*, user: AbstractBaseUser) -> Wallet:
    wallet, _ = Wallet.objects.get_or_create(owner_user_id=user.pk)
    return wallet


def _lock_job(job) -> None:
    """Lock the job row first, so every path takes locks in one order: job, then wallet.

    (A ledger entry's foreign key to the job takes a KEY SHARE lock on it; without this order a
    capture and a release of one job could deadlock on PostgreSQL.)
    """
    list(type(job)._base_manager.select_for_update().filter(pk=job.pk).values_list("pk", flat=True))


def _lock_wallet(wallet_id: int) -> Wallet:
    return Wallet.objects.select_for_update().get(pk=wallet_id)


def _move(
    *,
    wallet_id: int,
    kind: str,
    amount: int,
    available_delta: int,
    held_delta: int,
    idempotency_key: str,
    actor=None,
    reason: str = "",
    job=None,
    payment: Payment | None = None,
) -> LedgerEntry:
    """Apply one movement: conditional UPDATE of the cached balances, then the ledger entry.

    Must run inside a transaction. Raises InsufficientCredits when `available` (or `held`)
    would go negative; nothing is written then.
    """
    assert transaction.get_connection().in_atomic_block, "billing movements need a transaction"
    conditions = {}
    if available_delta < 0:
        conditions["available__gte"] = -available_delta
    if held_delta < 0:
        conditions["held__gte"] = -held_delta
    updated = Wallet.objects.filter(pk=wallet_id, **conditions).update(
        available=F("available") + available_delta, held=F("held") + held_delta
    )
    if updated != 1:
        current = Wallet.objects.filter(pk=wallet_id).values_list("available", flat=True).first()
        if held_delta < 0 and available_delta >= 0:
            raise RuntimeError(f"Wallet {wallet_id}: hold smaller than {-held_delta} ({kind} {idempotency_key})")
        raise InsufficientCredits(needed=-available_delta, available=current or 0)
    # After our UPDATE this transaction holds the row lock: the values read now are ours.
    after = Wallet.objects.filter(pk=wallet_id).values("available", "held").get()
    try:
        with transaction.atomic():
            entry = LedgerEntry.objects.create(
                wallet_id=wallet_id,
                kind=kind,
                amount=amount,
                available_delta=available_delta,
                held_delta=held_delta,
                available_after=after["available"],
                held_after=after["held"],
                actor=actor,
                reason=reason[:500],
                job=job,
                payment=payment,
                idempotency_key=idempotency_key,
            )
    except IntegrityError as exc:
        # The key exists: a concurrent duplicate got there first. Undo our UPDATE by failing
        # the caller's transaction; callers check for the key first, so this is a true race.
        raise AlreadyRecorded(idempotency_key) from exc
    events.wallet_changed_on_commit(wallet_id=wallet_id)
    return entry


def _exists(key: str) -> bool:
    return LedgerEntry.objects.filter(idempotency_key=key).exists()


def _job_hold(job) -> tuple[LedgerEntry | None, bool]:
    """(the job's reserve entry, whether its hold is already settled by a capture or release)."""
    reserve = LedgerEntry.objects.filter(idempotency_key=f"reserve:{job.pk}").first()
    settled = LedgerEntry.objects.filter(
        idempotency_key__in=[f"capture:{job.pk}", f"release:{job.pk}"]
    ).exists()
    return reserve, settled


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
    if _exists(key):
        return
    wallet = wallet_get_or_create_for_user(user=job.user)
    _move(
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
    reserve, _ = _job_hold(job)
    if reserve is None:
        if amount:
            raise ValueError(f"Job {job.pk} has no reservation to capture {amount} credits from")
        return
    _lock_job(job)
    _lock_wallet(reserve.wallet_id)
    _, settled = _job_hold(job)  # re-check under the lock
    if settled:
        return
    if amount > reserve.amount:
        raise ValueError(f"Cannot capture {amount} credits: job {job.pk} holds {reserve.amount}")
    if amount:
        _move(
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
        _move(
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
    reserve, settled = _job_hold(job)
    if reserve is None or settled:
        return
    _lock_job(job)
    _lock_wallet(reserve.wallet_id)
    _, settled = _job_hold(job)
    if settled:
        return
    _move(
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
    _lock_job(job)
    _lock_wallet(capture.wallet_id)
    key = f"refund:{job.pk}"
    if _exists(key):
        raise AlreadyRecorded("This job was refunded already.")
    return _move(
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


# --- grants and adjustments ------------------------------------------------------------------------


@transaction.atomic
def credits_grant_signup(*, email_address) -> LedgerEntry | None:
    """Free credits for a newly verified address: once per address, ever, and once per user.

    `email_address` is allauth's EmailAddress. Returns the entry, or None when nothing was due.
    """
    from billing.models import PriceSettings

    if not email_address.verified:
        return None
    amount = PriceSettings.load().signup_credits
    email = email_address.email.strip().lower()
    key = f"signup:{email}"
    if amount <= 0 or _exists(key):
        return None
    wallet = wallet_get_or_create_for_user(user=email_address.user)
    _lock_wallet(wallet.pk)
    if _exists(key) or LedgerEntry.objects.filter(
        wallet_id=wallet.pk, kind=EntryKind.GRANT, idempotency_key__startswith="signup:"
    ).exists():
        return None
    try:
        with transaction.atomic():
            return _move(
                wallet_id=wallet.pk,
                kind=EntryKind.GRANT,
                amount=amount,
                available_delta=amount,
                held_delta=0,
                idempotency_key=key,
                reason=f"Free credits for verifying {email}",
            )
    except AlreadyRecorded:
        return None


@transaction.atomic
def credits_adjust(*, user, amount: int, actor, reason: str, idempotency_key: str) -> LedgerEntry:
    """Staff grant (amount > 0) or revoke (amount < 0) with a mandatory reason.

    A revoke cannot take more than is available (InsufficientCredits). The key (e.g. a form's
    one-time token) makes a double-submitted form count once: a repeat raises AlreadyRecorded.
    """
    if not reason or not reason.strip():
        raise ValueError("A reason is required.")
    if amount == 0:
        raise ValueError("The amount must not be zero.")
    if actor is None or not actor.is_staff:
        raise PermissionError("Only staff can adjust credits.")
    key = f"adjust:{idempotency_key}"
    if _exists(key):
        raise AlreadyRecorded("This adjustment was recorded already.")
    wallet = wallet_get_or_create_for_user(user=user)
    return _move(
        wallet_id=wallet.pk,
        kind=EntryKind.ADJUST,
        amount=abs(amount),
        available_delta=amount,
        held_delta=0,
        idempotency_key=key,
        actor=actor,
        reason=reason.strip(),
    )


@transaction.atomic
def credits_purchase(*, payment: Payment) -> LedgerEntry | None:
    """Credit a paid purchase to its wallet, once per payment. Returns None if done before."""
    key = f"purchase:{payment.pk}"
    if _exists(key):
        return None
    _lock_wallet(payment.wallet_id)
    if _exists(key):
        return None
    return _move(
        wallet_id=payment.wallet_id,
        kind=EntryKind.PURCHASE,
        amount=payment.credits,
        available_delta=payment.credits,
        held_delta=0,
        idempotency_key=key,
        reason=f"Bought {payment.pack_name}",
        payment=payment,
    )
