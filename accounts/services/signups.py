"""Sign-up limits: how many accounts one address and one email domain may open, and which
sign-ups earn the free credits (billing grants them on email confirmation)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import Signup

GMAIL_DOMAINS = {"gmail.com", "googlemail.com"}


class SignupLimitReached(Exception):
    """Too many sign-ups from one address or one email domain; the message says which and until when."""


def email_domain(email: str) -> str:
    return email.rpartition("@")[2].strip().lower()


def email_mailbox(email: str) -> str:
    """The mailbox an address delivers to: 'name+tag@x' is 'name@x'; Gmail ignores dots too."""
    local, _, domain = email.strip().lower().rpartition("@")
    local = local.partition("+")[0]
    if domain in GMAIL_DOMAINS:
        local, domain = local.replace(".", ""), "gmail.com"
    return f"{local}@{domain}"


def _recent(*, since: timedelta, **lookup) -> int:
    return Signup.objects.filter(created_at__gte=timezone.now() - since, **lookup).count()


def signup_check_allowed(*, address: str, email: str) -> None:
    """Raise SignupLimitReached when this address or the email's domain has opened enough accounts
    lately (limits of 0 are off)."""
    hour, day = timedelta(hours=1), timedelta(days=1)
    address_limits = [(hour, settings.STUDIO_SIGNUPS_PER_ADDRESS_PER_HOUR, "an hour"),
                      (day, settings.STUDIO_SIGNUPS_PER_ADDRESS_PER_DAY, "a day")]
    for window, limit, label in address_limits:
        if limit and _recent(since=window, address=address) >= limit:
            raise SignupLimitReached(
                f"Too many accounts were opened from your network lately (at most {limit} {label}). "
                "Please try again later."
            )
    domain, limit = email_domain(email), settings.STUDIO_SIGNUPS_PER_DOMAIN_PER_HOUR
    if limit and _recent(since=hour, email_domain=domain) >= limit:
        raise SignupLimitReached(
            f"Too many accounts with @{domain} addresses were opened in the last hour. "
            "Please try again later."
        )


@transaction.atomic
def signup_record(*, user, address: str) -> Signup:
    """Remember a new sign-up. Its free credits are due unless its address already opened
    STUDIO_FREE_CREDITS_PER_ADDRESS_PER_DAY accounts in the last day (0: no such limit), or its
    mailbox (the address without +tags) already has an account."""
    mailbox = email_mailbox(user.email)
    per_address = settings.STUDIO_FREE_CREDITS_PER_ADDRESS_PER_DAY
    address_spent = bool(per_address) and _recent(since=timedelta(days=1), address=address) >= per_address
    mailbox_used = Signup.objects.filter(mailbox=mailbox).exclude(user=user).exists()
    return Signup.objects.create(
        user=user, address=address, email_domain=email_domain(user.email), mailbox=mailbox,
        free_credits_due=not (address_spent or mailbox_used),
    )
