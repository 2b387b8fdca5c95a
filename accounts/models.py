"""What the studio remembers about each sign-up, to keep free credits hard to farm."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Signup(models.Model):
    """One self-service sign-up: where it came from and whether its free credits are due.

    Accounts made another way (admin, createsuperuser) have none.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="signup")
    address = models.GenericIPAddressField(help_text="The client address, as the trusted proxies tell it.")
    email_domain = models.CharField(max_length=255)
    mailbox = models.CharField(max_length=320, help_text="The email without +tags (and Gmail's dots).")
    free_credits_due = models.BooleanField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["address", "created_at"]),
            models.Index(fields=["email_domain", "created_at"]),
            models.Index(fields=["mailbox"]),
        ]

    def __str__(self) -> str:
        return f"{self.user} from {self.address}"
