"""Forms: query parameters of the billing pages, staff adjustments and refunds."""

from __future__ import annotations

import uuid

from django import forms

from accounts.models import ApiKeyScope
from billing.subjects import InvalidSubject, subject_check


MAX_DB_ID = 2**63 - 1


class UserSearchForm(forms.Form):
    """Staff user search. Django's CharField already refuses NUL bytes (a 400, not a database error)."""

    q = forms.CharField(required=False, max_length=254)


class LedgerExportForm(forms.Form):
    user = forms.IntegerField(required=False, min_value=1, max_value=MAX_DB_ID)


class CheckoutReturnForm(forms.Form):
    """Stripe Checkout session ids are `cs_test_...` / `cs_live_...`: letters, digits, underscores."""

    session_id = forms.RegexField(regex=r"^cs_[A-Za-z0-9_]{1,250}\Z", required=False)


class AdjustForm(forms.Form):
    GRANT, REVOKE = "grant", "revoke"
    action = forms.ChoiceField(choices=[(GRANT, "Grant credits"), (REVOKE, "Revoke credits")])
    amount = forms.IntegerField(min_value=1, max_value=10_000_000)
    reason = forms.CharField(max_length=500, widget=forms.TextInput(attrs={"size": 40}))
    token = forms.UUIDField(widget=forms.HiddenInput, initial=uuid.uuid4)

    def clean_reason(self) -> str:
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError("A reason is required.")
        return reason

    @property
    def signed_amount(self) -> int:
        amount = self.cleaned_data["amount"]
        return amount if self.cleaned_data["action"] == self.GRANT else -amount


class RefundForm(forms.Form):
    subject = forms.CharField(
        max_length=200, label="What to refund", help_text="As the ledger names it, e.g. job:<id>.",
        widget=forms.TextInput(attrs={"size": 40, "placeholder": "job:…"}),
    )
    reason = forms.CharField(max_length=500, widget=forms.TextInput(attrs={"size": 40}))

    def clean_reason(self) -> str:
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError("A reason is required.")
        return reason

    def clean_subject(self) -> str:
        try:
            return subject_check(self.cleaned_data["subject"].strip())
        except InvalidSubject as error:
            raise forms.ValidationError(str(error)) from error


# --- team wallets --------------------------------------------------------------------------------


class TeamTransferForm(forms.Form):
    """Move credits from my own wallet into a team's. The token makes a double submit count once."""

    amount = forms.IntegerField(
        min_value=1, max_value=100_000_000, label="Credits to move",
        error_messages={"min_value": "Move at least 1 credit.", "invalid": "Enter a whole number of credits."},
    )
    token = forms.UUIDField(widget=forms.HiddenInput, initial=uuid.uuid4)


class MemberCapForm(forms.Form):
    monthly_credits = forms.IntegerField(
        min_value=0, max_value=100_000_000, label="Monthly limit",  # explained on the page, once
        error_messages={"min_value": "A limit cannot be negative.", "invalid": "Enter a whole number of credits."},
    )


class ApiKeyForm(forms.Form):
    """A new API key: its name, scopes and optional monthly cap (accounts.services.api_key_create
    checks them again and says why it refuses)."""

    name = forms.CharField(max_length=100, help_text="What uses it, e.g. “Krita plugin”.")
    scopes = forms.MultipleChoiceField(
        choices=ApiKeyScope.choices, widget=forms.CheckboxSelectMultiple, initial=["generate", "read_images"],
        error_messages={"required": "Choose at least one scope."},
    )
    monthly_credit_cap = forms.IntegerField(
        required=False, min_value=1, max_value=2_000_000_000, label="Monthly credit cap",
        help_text="Optional: the most credits this key may spend in a calendar month.",
    )

