"""Read-only questions about accounts that other apps ask."""

from __future__ import annotations

from accounts.models import Signup


def free_credits_due(*, user) -> bool:
    """Whether the sign-up grant is due to this user: False for a sign-up beyond the per-address
    daily allowance or of a mailbox that already has an account; True for accounts made without
    the sign-up form (admin, createsuperuser)."""
    signup = Signup.objects.filter(user=user).only("free_credits_due").first()
    return signup is None or signup.free_credits_due
