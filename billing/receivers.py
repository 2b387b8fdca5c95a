"""Signal receivers: thin adapters that call services (no business logic here)."""

from __future__ import annotations

from allauth.account.signals import email_confirmed
from django.dispatch import receiver

from billing.services import credits_grant_signup


@receiver(email_confirmed, dispatch_uid="billing.grant_signup_credits")
def grant_signup_credits(sender, email_address, **kwargs) -> None:
    credits_grant_signup(email_address=email_address)
