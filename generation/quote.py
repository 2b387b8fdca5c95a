"""The Create form's live cost quote: its own small form and view (`generation:quote`).

It takes only what the price depends on (aspect, width, height, steps, num_images), so the
prompt and the CSRF token never go into a GET URL. Billing prices plain numbers; knowing what a
Create request is (an aspect ratio's size, the model that serves) is generation's job.
"""

from __future__ import annotations

import uuid

from django import forms
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from billing.selectors import member_used_this_month, team_member_caps, wallet_balance, wallet_for_team
from generation import permissions, services
from generation.forms import ASPECT_RATIOS, size_for_aspect
from generation.selectors import model_info, models_offered


class QuoteForm(forms.Form):
    """The Create form's fields that set the price. Explicit width/height win over aspect."""

    aspect = forms.ChoiceField(required=False, choices=[(k, k) for k in ASPECT_RATIOS])
    width = forms.IntegerField(required=False, min_value=8, max_value=4096)
    height = forms.IntegerField(required=False, min_value=8, max_value=4096)
    steps = forms.IntegerField(min_value=1, max_value=150)
    num_images = forms.IntegerField(min_value=1, max_value=4)
    model = forms.SlugField(required=False)  # an offered model's name; empty: the default model

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user  # whose private models (full fine-tunes) may be priced

    def clean_model(self):
        name = self.cleaned_data["model"]
        if not name:
            return None
        model = models_offered(self.user).filter(name=name).first()
        if model is None:
            raise forms.ValidationError("That model is not offered.")
        return model

    def size(self) -> tuple[int, int] | None:
        data = self.cleaned_data
        if data["width"] and data["height"]:
            return data["width"], data["height"]
        if data["aspect"]:
            return size_for_aspect(data["aspect"], model_info(data["model"]))
        return None


def quote_cost(form: QuoteForm) -> int | None:
    """Credits for the form's settings, or None when they do not make a request."""
    if not form.is_valid() or (size := form.size()) is None:
        return None
    width, height = size
    try:
        return services.job_cost(width=width, height=height, steps=form.cleaned_data["steps"],
                                 num_images=form.cleaned_data["num_images"], model=form.cleaned_data["model"])
    except ValueError:
        return None


def _team_to_bill(request: HttpRequest) -> str | None:
    """The team id when the form says "Bill to team" with a team the user may bill (else None:
    never another team's balance)."""
    team_id = request.GET.get("save_to", "") if request.GET.get("bill_team") else ""
    try:
        team_id = str(uuid.UUID(team_id))
    except ValueError:
        return None
    return team_id if permissions.can_bill_team(request.user, team_id) else None


def _available_to_spend(request: HttpRequest) -> tuple[int, bool]:
    """Credits the payer has for this user: their own wallet's, or the team wallet's, no more than
    what their monthly cap leaves. The flag says whether the team pays."""
    team_id = _team_to_bill(request)
    if team_id is None:
        return wallet_balance(user=request.user)[0], False
    wallet = wallet_for_team(team_id=team_id)
    if wallet is None:
        return 0, True
    cap = team_member_caps(team_id=team_id).get(request.user.pk)
    if cap is None:
        return wallet.available, True
    left = max(cap - member_used_this_month(wallet_id=wallet.pk, user_id=request.user.pk), 0)
    return min(wallet.available, left), True


@login_required
@require_GET
def quote(request: HttpRequest) -> HttpResponse:
    """Live cost of the Create form's settings. Bad or missing input: a neutral fragment, status 200."""
    available, team_pays = _available_to_spend(request)
    cost = quote_cost(QuoteForm(request.GET, user=request.user))
    return render(
        request,
        "generation/_quote.html",
        {"cost": cost, "available": available, "team_pays": team_pays,
         "affordable": cost is not None and cost <= available},
    )
