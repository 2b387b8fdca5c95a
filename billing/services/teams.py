"""Team wallets: moving credits from a member's own wallet into the team's, and per-member caps.

Buying a pack for a team is `payment_checkout_start(..., team=)` / `payment_test_purchase(...,
team=)` (billing.services.payments): the Payment's wallet is the team's, so the webhook credits it.
Spending from a team wallet is `credits_reserve(..., team=)`, which enforces the caps set here.

Who may do these is `accounts.permissions.can_manage_wallet` (owner and admins). Views ask it to
choose between 403 and 404; the services assert it again (TeamWalletNotAllowed), so no other
caller can skip it.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction

from accounts import permissions as team_permissions
from billing.models import EntryKind, LedgerEntry, MemberCap
from billing.services.ledger import (
    AlreadyRecorded,
    key_exists,
    lock_wallet,
    move,
    wallet_get_or_create_for_team,
    wallet_get_or_create_for_user,
)

MAX_TRANSFER = 100_000_000
MAX_MONTHLY_CAP = 100_000_000


class TeamWalletNotAllowed(PermissionError):
    """The user may not manage this team's wallet (not an owner or admin of the team)."""


class NotATeamMember(ValueError):
    """A cap was asked for someone who is not in the team."""


@dataclass(frozen=True)
class Transfer:
    out_entry: LedgerEntry  # on the user's wallet
    in_entry: LedgerEntry  # on the team's wallet


def assert_manages_team_wallet(*, user, team) -> None:
    if not team_permissions.can_manage_wallet(team_permissions.role_of(user=user, team_id=team.pk)):
        raise TeamWalletNotAllowed("Only the team's owner and admins can manage its credits.")


def lock_wallets_in_order(*wallet_ids: int) -> None:
    """Lock several wallet rows, always lowest id first: two movements that touch the same pair
    of wallets take their locks in the same order, so they queue instead of deadlocking."""
    for wallet_id in sorted(set(wallet_ids)):
        lock_wallet(wallet_id)


@transaction.atomic
def credits_transfer_to_team(*, user, team, amount: int, idempotency_key: str) -> Transfer:
    """Move `amount` credits from the user's own wallet into the team's: a `transfer_out` entry on
    the user's wallet and a `transfer_in` on the team's, in one transaction.

    Raises InsufficientCredits (message fit to show) when the user has less available, and
    AlreadyRecorded when this key was used before (a double-submitted form moves credits once).
    """
    if not isinstance(amount, int) or not 0 < amount <= MAX_TRANSFER:
        raise ValueError(f"The amount must be between 1 and {MAX_TRANSFER:,}.")
    assert_manages_team_wallet(user=user, team=team)
    out_key, in_key = f"transfer:{idempotency_key}:out", f"transfer:{idempotency_key}:in"
    if key_exists(out_key):
        raise AlreadyRecorded("This transfer was recorded already.")
    source = wallet_get_or_create_for_user(user=user)
    target = wallet_get_or_create_for_team(team=team)
    lock_wallets_in_order(source.pk, target.pk)
    if key_exists(out_key):  # a concurrent duplicate committed while we waited for the locks
        raise AlreadyRecorded("This transfer was recorded already.")
    who = getattr(user, "email", "") or str(user)
    out_entry = move(
        wallet_id=source.pk,
        kind=EntryKind.TRANSFER_OUT,
        amount=amount,
        available_delta=-amount,
        held_delta=0,
        idempotency_key=out_key,
        actor=user,
        reason=f"Moved to team {team.name}",
    )
    in_entry = move(
        wallet_id=target.pk,
        kind=EntryKind.TRANSFER_IN,
        amount=amount,
        available_delta=amount,
        held_delta=0,
        idempotency_key=in_key,
        actor=user,
        reason=f"Moved in by {who}",
    )
    return Transfer(out_entry=out_entry, in_entry=in_entry)


def _assert_member(*, team, member) -> None:
    if team_permissions.role_of(user=member, team_id=team.pk) is None:
        raise NotATeamMember(f"{member} is not a member of {team.name}.")


@transaction.atomic
def member_cap_set(*, actor, team, member, monthly_credits: int) -> MemberCap:
    """Limit what `member` may reserve from the team's wallet per calendar month (UTC). 0 means
    they may not bill the team at all. A lower cap than this month's use stops further
    reservations; it never undoes what was spent."""
    if not isinstance(monthly_credits, int) or not 0 <= monthly_credits <= MAX_MONTHLY_CAP:
        raise ValueError(f"The monthly limit must be between 0 and {MAX_MONTHLY_CAP:,}.")
    assert_manages_team_wallet(user=actor, team=team)
    _assert_member(team=team, member=member)
    # Under the wallet's lock, as reservations read the cap: a change and a reservation are
    # ordered one way or the other, never interleaved.
    lock_wallet(wallet_get_or_create_for_team(team=team).pk)
    cap, _ = MemberCap.objects.update_or_create(
        team_id=team.pk, user_id=member.pk, defaults={"monthly_credits": monthly_credits, "set_by": actor}
    )
    return cap


@transaction.atomic
def member_cap_clear(*, actor, team, member) -> bool:
    """Remove a member's cap (no limit). Returns whether there was one."""
    assert_manages_team_wallet(user=actor, team=team)
    lock_wallet(wallet_get_or_create_for_team(team=team).pk)
    deleted, _ = MemberCap.objects.filter(team_id=team.pk, user_id=member.pk).delete()
    return bool(deleted)
