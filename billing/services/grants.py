"""Credits coming in: free credits on email verification, staff adjustments, paid purchases.

Same rules as billing.services.credits (idempotency keys, conditional updates, events on commit).
"""

from __future__ import annotations

from django.db import transaction

from accounts.selectors import free_credits_due

from billing.models import EntryKind, LedgerEntry, Payment, PriceSettings
from billing.services.ledger import (
    AlreadyRecorded,
    key_exists,
    lock_wallet,
    move,
    wallet_get_or_create_for_user,
)


@transaction.atomic
def credits_grant_signup(*, email_address) -> LedgerEntry | None:
    """Free credits for a newly verified address: once per address, ever, and once per user.

    `email_address` is allauth's EmailAddress. Returns the entry, or None when nothing was due.
    """
    if not email_address.verified:
        return None
    if not free_credits_due(user=email_address.user):  # a farmed sign-up (accounts.services.signup_record)
        return None
    amount = PriceSettings.load().signup_credits
    email = email_address.email.strip().lower()
    key = f"signup:{email}"
    if amount <= 0 or key_exists(key):
        return None
    wallet = wallet_get_or_create_for_user(user=email_address.user)
    lock_wallet(wallet.pk)
    if key_exists(key) or LedgerEntry.objects.filter(
        wallet_id=wallet.pk, kind=EntryKind.GRANT, idempotency_key__startswith="signup:"
    ).exists():
        return None
    try:
        with transaction.atomic():
            return move(
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
    if key_exists(key):
        raise AlreadyRecorded("This adjustment was recorded already.")
    wallet = wallet_get_or_create_for_user(user=user)
    return move(
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
    if key_exists(key):
        return None
    lock_wallet(payment.wallet_id)
    if key_exists(key):
        return None
    return move(
        wallet_id=payment.wallet_id,
        kind=EntryKind.PURCHASE,
        amount=payment.credits,
        available_delta=payment.credits,
        held_delta=0,
        idempotency_key=key,
        reason=f"Bought {payment.pack_name}",
        payment=payment,
    )
