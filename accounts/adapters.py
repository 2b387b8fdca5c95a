"""The allauth account adapter: the client's address as the trusted proxies tell it."""

from __future__ import annotations

from allauth.account.adapter import DefaultAccountAdapter
from django.core.exceptions import ImproperlyConfigured


class AccountAdapter(DefaultAccountAdapter):
    def get_client_ip(self, request) -> str:
        """allauth takes the address ALLAUTH_TRUSTED_PROXY_COUNT entries from the right of
        X-Forwarded-For (what our own proxies appended; anything to its left the client could
        have written). A shorter header means the request did not come through all of them:
        then the peer itself is the client (allauth would raise, a 500)."""
        try:
            return super().get_client_ip(request)
        except ImproperlyConfigured:
            return request.META["REMOTE_ADDR"]
