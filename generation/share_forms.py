"""Forms of public links, reports and the staff review: a bad value is a 400 with a message."""

from __future__ import annotations

from datetime import timedelta

from django import forms
from django.utils import timezone

from generation.models import ReportReason

EXPIRY_CHOICES = {
    "never": ("Never", None),
    "1h": ("In an hour", timedelta(hours=1)),
    "1d": ("In a day", timedelta(days=1)),
    "7d": ("In 7 days", timedelta(days=7)),
    "30d": ("In 30 days", timedelta(days=30)),
}


class ShareLinkForm(forms.Form):
    show_parameters = forms.BooleanField(required=False, label="Show the prompt and parameters")
    expires = forms.ChoiceField(choices=[(key, label) for key, (label, _) in EXPIRY_CHOICES.items()],
                                initial="never", label="Link expires")

    def expires_at(self):
        delta = EXPIRY_CHOICES[self.cleaned_data["expires"]][1]
        return timezone.now() + delta if delta else None


class ReportForm(forms.Form):
    reason = forms.ChoiceField(choices=ReportReason.choices, widget=forms.RadioSelect, label="What is wrong?")
    details = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 4}),
                              label="Details (optional)", help_text="Anything that helps us review it.")


MODERATION_ACTIONS = {
    "dismiss": "Dismiss the report",
    "hide_link": "Hide the link",
    "delete_image": "Delete the image",
    "suspend_account": "Suspend the account",
}


class ModerationForm(forms.Form):
    action = forms.ChoiceField(choices=list(MODERATION_ACTIONS.items()), widget=forms.RadioSelect)
    image = forms.UUIDField(required=False, help_text="Which image to delete (delete_image only).")
    note = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}),
                           label="Note (kept with the action)")

    def clean(self):
        data = super().clean()
        if data.get("action") == "delete_image" and not data.get("image"):
            raise forms.ValidationError("Say which image to delete.")
        return data
