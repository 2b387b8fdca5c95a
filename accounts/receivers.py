"""Signal receivers: thin adapters that call services."""

from __future__ import annotations

from allauth.account.adapter import get_adapter
from allauth.account.signals import user_signed_up
from django.dispatch import receiver

from accounts import services


@receiver(user_signed_up, dispatch_uid="accounts.record_signup")
def record_signup(sender, request, user, **kwargs) -> None:
    services.signup_record(user=user, address=get_adapter(request).get_client_ip(request))
