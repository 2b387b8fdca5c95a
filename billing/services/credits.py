"""Every change to held credits: reserve -> capture | release, and staff refunds.

A hold is keyed by its subject, an opaque `<kind>:<id>` string chosen by the spender
(generation uses `job:<uuid>`; a fine-tune or an API call can bring its own kind). Billing never
looks the subject up: whoever spends passes the payer and the amounts.

Built on billing.services.ledger (conditional updates, idempotency keys, wallet row locks,
events on commit); see docs/billing.md.
"""

from __future__ import annotations

from django.db import transaction

from billing.models import EntryKind, LedgerEntry, MemberCap
from billing.selectors import api_key_used_this_month, member_used_this_month
from billing.services.ledger import (
    AlreadyRecorded,
    ApiKeyCapReached,
    MemberCapReached,
    key_exists,
    lock_wallet,
    move,
    subject_hold,
    wallet_get_or_create_for_team,
    wallet_get_or_create_for_user,
)
from billing.subjects import subject_check


def _check_member_cap(*, team, user, wallet_id: int, amount: int) -> None:
    """Raise MemberCapReached if `amount` would take the member past their monthly cap on the team
    wallet. Callers hold the wallet's row lock, so two reservations of one team cannot both pass."""
    cap = MemberCap.objects.filter(team_id=team.pk, user_id=user.pk).values_list("monthly_credits", flat=True).first()
    if cap is None:
        return
    used = member_used_this_month(wallet_id=wallet_id, user_id=user.pk)
    if used + amount > cap:
        raise MemberCapReached(team_name=team.name, cap=cap, used=used, needed=amount)


def _check_api_key_cap(*, api_key, amount: int) -> None:
    """Raise ApiKeyCapReached if `amount` would take the key past its monthly cap. A key spends from
    one wallet only (its owner's), and callers hold that wallet's row lock."""
    cap = api_key.monthly_credit_cap
    if cap is None:
        return
    used = api_key_used_this_month(api_key_id=api_key.pk)
    if used + amount > cap:
        raise ApiKeyCapReached(key_name=api_key.name, cap=cap, used=used, needed=amount)


@transaction.atomic
def credits_reserve(*, user, subject: str, amount: int, team=None, api_key=None) -> None:
    """Move `amount` from available to held, for `subject`: from the user's wallet, or with
    `team`, from the team's wallet on the user's behalf (their monthly cap applies).

    With `api_key` (an accounts.ApiKey) the hold records the key it was spent through, and the
    key's monthly cap applies too (ApiKeyCapReached, an InsufficientCredits). Which wallet a key
    may spend from is the caller's question (a user key: its user's; a team key: its team's).

    Call it in the transaction that creates the subject (the job): InsufficientCredits (or its
    MemberCapReached) rolls both back. A zero amount records nothing. Calling it twice for one
    subject reserves once. Whether the user may bill the team is the caller's question.
    """
    subject_check(subject)
    if amount < 0:
        raise ValueError("amount must be >= 0")
    if amount == 0:
        return
    key = f"reserve:{subject}"
    if key_exists(key):
        return
    if team is None:
        wallet = wallet_get_or_create_for_user(user=user)
    else:
        wallet = lock_wallet(wallet_get_or_create_for_team(team=team).pk)
        _check_member_cap(team=team, user=user, wallet_id=wallet.pk, amount=amount)
    if api_key is not None:
        wallet = lock_wallet(wallet.pk)  # serialises the key's reservations: its cap holds under races
        _check_api_key_cap(api_key=api_key, amount=amount)
    move(
        wallet_id=wallet.pk,
        kind=EntryKind.RESERVE,
        amount=amount,
        available_delta=-amount,
        held_delta=amount,
        idempotency_key=key,
        reason="Reserved",
        subject=subject,
        spender_id=user.pk if team is not None else None,
        api_key_id=api_key.pk if api_key is not None else None,
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
            spender_id=reserve.spender_id,
            api_key_id=reserve.api_key_id,
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
            spender_id=reserve.spender_id,
            api_key_id=reserve.api_key_id,
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
        spender_id=reserve.spender_id,
        api_key_id=reserve.api_key_id,
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
        spender_id=capture.spender_id,
        api_key_id=capture.api_key_id,
    )
