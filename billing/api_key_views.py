"""API key pages: my keys, a team's keys (its admins only), and one key's usage per day (table,
inline SVG chart, CSV). They live in billing because usage is money: the ledger records which key
each hold was spent through, and accounts (where keys are made and revoked) imports no other app.

A new key's token is shown once, in the answer to the post that made it (never stored, never put in
a redirect or the session), with `Cache-Control: no-store`. Keys someone may not manage are 404.
"""

from __future__ import annotations

import csv

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import permissions as team_permissions
from accounts import services as account_services
from accounts.models import Team
from accounts.selectors import api_key_manageable_by, api_keys_of_team, api_keys_of_user
from billing import selectors
from billing.charts import usage_bar_chart
from billing.forms import ApiKeyForm

USAGE_DAYS = (7, 30, 90)


def _keys_page(request: HttpRequest, *, team: Team | None) -> HttpResponse:
    form = ApiKeyForm(request.POST or None)
    created = token = None
    if request.method == "POST" and form.is_valid():
        try:
            created, token = account_services.api_key_create(
                actor=request.user, team=team, name=form.cleaned_data["name"], scopes=form.cleaned_data["scopes"],
                monthly_credit_cap=form.cleaned_data["monthly_credit_cap"],
            )
        except account_services.ApiKeyRefused as refused:
            form.add_error(None, str(refused))
        else:
            form = ApiKeyForm()
    keys = list(api_keys_of_team(team_id=team.pk) if team is not None else api_keys_of_user(user=request.user))
    spent = selectors.api_keys_spent(api_key_ids=[key.pk for key in keys])
    for key in keys:
        key.spent_this_month = spent.get(key.pk, 0)
    status = 400 if request.method == "POST" and created is None else 200
    response = render(request, "billing/api_keys.html", {
        "team": team, "keys": keys, "form": form, "created": created, "token": token,
    }, status=status)
    if token:
        response["Cache-Control"] = "no-store"
    return response


@login_required
@require_http_methods(["GET", "POST"])
def api_keys(request: HttpRequest) -> HttpResponse:
    return _keys_page(request, team=None)


@login_required
@require_http_methods(["GET", "POST"])
def team_api_keys(request: HttpRequest, team_id) -> HttpResponse:
    if not team_permissions.can_manage_api_keys(team_permissions.role_of(user=request.user, team_id=team_id)):
        raise Http404("No such team.")
    return _keys_page(request, team=get_object_or_404(Team, pk=team_id))


def _key_or_404(request: HttpRequest, key_id: int):
    key = api_key_manageable_by(user=request.user, key_id=key_id)
    if key is None:
        raise Http404("No such key.")
    return key


def _back_to_list(key):
    if key.owner_team_id is not None:
        return redirect("billing:team_api_keys", key.owner_team_id)
    return redirect("billing:api_keys")


@login_required
@require_POST
def api_key_revoke(request: HttpRequest, key_id: int) -> HttpResponse:
    key = _key_or_404(request, key_id)
    try:
        account_services.api_key_revoke(actor=request.user, key=key)
    except account_services.ApiKeyRefused:
        raise Http404("No such key.") from None
    messages.success(request, f"Revoked {key.name} ({key.prefix}…): it stops working now.")
    return _back_to_list(key)


def _days(request: HttpRequest) -> int:
    try:
        days = int(request.GET.get("days", "30"))
    except ValueError:
        days = 30
    return days if days in USAGE_DAYS else 30


@login_required
@require_GET
def api_key_usage(request: HttpRequest, key_id: int) -> HttpResponse:
    key = _key_or_404(request, key_id)
    days = _days(request)
    rows = selectors.api_key_usage_per_day(api_key_id=key.pk, days=days)
    return render(request, "billing/api_key_usage.html", {
        "key": key, "rows": rows, "days": days, "day_choices": USAGE_DAYS,
        "total": sum(row.spent for row in rows), "charges": sum(row.charges for row in rows),
        "chart": usage_bar_chart(rows, series=(("spent", "Credits"),)),
        "used_this_month": selectors.api_key_used_this_month(api_key_id=key.pk),
    })


@login_required
@require_GET
def api_key_usage_csv(request: HttpRequest, key_id: int) -> HttpResponse:
    key = _key_or_404(request, key_id)
    days = _days(request)
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="api-key-{key.prefix}-usage-{days}d.csv"'
    writer = csv.writer(response)
    writer.writerow(["day", "key_prefix", "charges", "credits"])
    for row in selectors.api_key_usage_per_day(api_key_id=key.pk, days=days):
        writer.writerow([row.day.isoformat(), key.prefix, row.charges, row.spent])
    return response
