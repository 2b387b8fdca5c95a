"""The ledger's primitives, shared by the credit services: one movement, locks, key checks.

Rules kept by every movement (see docs/billing.md):
- one ledger entry per movement, with a unique idempotency key; a repeated call finds its key
  and does nothing;
- the cached balances move in the same transaction as the entry, by a conditional UPDATE
  (`available = available - n WHERE available >= n`) so no interleaving can overdraw; the
  CHECK constraints on Wallet are the backstop;
- holds are keyed by an opaque subject (`job:<uuid>`); anything that settles a hold locks the
  wallet row first (select_for_update; SQLite's IMMEDIATE transactions serialize writers
  anyway), so "is it already captured?" and "capture it" cannot interleave;
- the live header balance is pushed after commit (billing.events).

Only billing.services modules use these; everything else calls the services.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import IntegrityError, transaction
from django.db.models import F

from billing import events
from billing.models import EntryKind, LedgerEntry, Payment, Wallet

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser


class InsufficientCredits(Exception):
    """Not enough available credits. The message is fit to show the user."""

    def __init__(self, *, needed: int, available: int):
        self.needed = needed
        self.available = available
        super().__init__(f"Not enough credits: this needs {needed}, you have {available}.")


class MemberCapReached(InsufficientCredits):
    """The member's monthly cap on a team wallet would be exceeded. The message is fit to show."""

    def __init__(self, *, team_name: str, cap: int, used: int, needed: int):
        self.cap, self.used = cap, used
        Exception.__init__(
            self,
            f"This needs {needed} credits, but your monthly limit on {team_name}'s credits is {cap} and you have "
            f"used {used} this month. Ask a team admin to raise it, or bill the job to yourself.",
        )
        self.needed, self.available = needed, max(cap - used, 0)


class ApiKeyCapReached(InsufficientCredits):
    """The API key's monthly credit cap would be exceeded. The message is fit to show."""

    def __init__(self, *, key_name: str, cap: int, used: int, needed: int):
        self.cap, self.used = cap, used
        Exception.__init__(
            self,
            f"This needs {needed} credits, but the API key {key_name!r} may spend {cap} a month and has "
            f"used {used} this month. Raise its cap on the API keys page, or use another key.",
        )
        self.needed, self.available = needed, max(cap - used, 0)


class AlreadyRecorded(Exception):
    """A movement with this idempotency key exists already (raised only where that is an error)."""


def wallet_get_or_create_for_user(*, user: AbstractBaseUser) -> Wallet:
    wallet, _ = Wallet.objects.get_or_create(owner_user_id=user.pk)
    return wallet


def wallet_get_or_create_for_team(*, team) -> Wallet:
    wallet, _ = Wallet.objects.get_or_create(owner_team_id=team.pk)
    return wallet


def lock_wallet(wallet_id: int) -> Wallet:
    return Wallet.objects.select_for_update().get(pk=wallet_id)


def move(
    *,
    wallet_id: int,
    kind: str,
    amount: int,
    available_delta: int,
    held_delta: int,
    idempotency_key: str,
    actor=None,
    reason: str = "",
    subject: str = "",
    payment: Payment | None = None,
    spender_id: int | None = None,
    api_key_id: int | None = None,
) -> LedgerEntry:
    """Apply one movement: conditional UPDATE of the cached balances, then the ledger entry.

    Must run inside a transaction. Raises InsufficientCredits when `available` (or `held`)
    would go negative; nothing is written then.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("billing movements need a transaction")
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
                subject=subject,
                payment=payment,
                spender_id=spender_id,
                api_key_id=api_key_id,
                idempotency_key=idempotency_key,
            )
    except IntegrityError as exc:
        if not key_exists(idempotency_key):
            raise  # another constraint: a bug, not a duplicate
        # The key exists: a concurrent duplicate got there first. Undo our UPDATE by failing
        # the caller's transaction; callers check for the key first, so this is a true race.
        raise AlreadyRecorded(idempotency_key) from exc
    events.wallet_changed_on_commit(wallet_id=wallet_id)
    return entry


def key_exists(key: str) -> bool:
    return LedgerEntry.objects.filter(idempotency_key=key).exists()


def subject_hold(subject: str) -> tuple[LedgerEntry | None, bool]:
    """(the subject's reserve entry, whether its hold is already settled by a capture or release)."""
    entries = LedgerEntry.objects.filter(subject=subject)
    reserve = entries.filter(kind=EntryKind.RESERVE).first()
    settled = entries.filter(kind__in=[EntryKind.CAPTURE, EntryKind.RELEASE]).exists()
    return reserve, settled
