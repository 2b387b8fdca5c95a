"""The Create form's live cost quote: its own small form and view (`generation:quote`).

It takes only what the price depends on (aspect, width, height, steps, num_images), so the
prompt and the CSRF token never go into a GET URL. Billing prices plain numbers; knowing what a
Create request is (an aspect ratio's size, the model that serves) is generation's job.
"""

from __future__ import annotations

from django import forms
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from billing.selectors import wallet_balance
from generation import services
from generation.forms import ASPECT_RATIOS, size_for_aspect
from generation.selectors import model_info


class QuoteForm(forms.Form):
    """The Create form's fields that set the price. Explicit width/height win over aspect."""

    aspect = forms.ChoiceField(required=False, choices=[(k, k) for k in ASPECT_RATIOS])
    width = forms.IntegerField(required=False, min_value=8, max_value=4096)
    height = forms.IntegerField(required=False, min_value=8, max_value=4096)
    steps = forms.IntegerField(min_value=1, max_value=150)
    num_images = forms.IntegerField(min_value=1, max_value=4)

    def size(self) -> tuple[int, int] | None:
        data = self.cleaned_data
        if data["width"] and data["height"]:
            return data["width"], data["height"]
        if data["aspect"]:
            return size_for_aspect(data["aspect"], model_info())
        return None


def quote_cost(form: QuoteForm) -> int | None:
    """Credits for the form's settings, or None when they do not make a request."""
    if not form.is_valid() or (size := form.size()) is None:
        return None
    width, height = size
    try:
        return services.job_cost(
            width=width, height=height, steps=form.cleaned_data["steps"], num_images=form.cleaned_data["num_images"]
        )
    except ValueError:
        return None


@login_required
@require_GET
def quote(request: HttpRequest) -> HttpResponse:
    """Live cost of the Create form's settings. Bad or missing input: a neutral fragment, status 200."""
    available, _ = wallet_balance(user=request.user)
    cost = quote_cost(QuoteForm(request.GET))
    return render(
        request,
        "generation/_quote.html",
        {"cost": cost, "available": available, "affordable": cost is not None and cost <= available},
    )
