"""The sign-up form: allauth's, plus the per-address and per-domain sign-up limits."""

from __future__ import annotations

from allauth.account.adapter import get_adapter
from allauth.account.forms import SignupForm as AllauthSignupForm
from allauth.core import context

from accounts import services


class SignupForm(AllauthSignupForm):
    def clean(self):
        cleaned_data = super().clean()
        email = cleaned_data.get("email")
        if self.errors or not email:
            return cleaned_data
        request = context.request
        if request is None:  # not from a sign-up request: nothing to count against
            return cleaned_data
        try:
            services.signup_check_allowed(address=get_adapter(request).get_client_ip(request), email=email)
        except services.SignupLimitReached as error:
            self.add_error(None, str(error))
        return cleaned_data
