"""A team's credits page: balance, history, top-ups (a pack, or credits from my own wallet),
per-member monthly caps and usage per member and month.

Non-members get 404 (they may not know the team exists). Viewers and members see the balance and
their own usage; an action they may not take answers 403. Who manages the wallet is
accounts.permissions.can_manage_wallet, asked once per request here.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import NoReverseMatch, reverse
from django.views.decorators.http import require_GET, require_POST

from accounts import permissions as team_permissions
from accounts.models import Team
from accounts.selectors import team_members
from billing import selectors, services
from billing.forms import MemberCapForm, TeamTransferForm
from billing.models import CreditPack

logger = logging.getLogger(__name__)


def _team_for(request: HttpRequest, team_id) -> tuple[Team, str]:
    """The team and the user's role in it; 404 for anyone who is not a member."""
    role = team_permissions.role_of(user=request.user, team_id=team_id)
    if not team_permissions.can_view_team(role):
        raise Http404("No such team.")
    return get_object_or_404(Team, pk=team_id), role


def _managed_team(request: HttpRequest, team_id) -> Team:
    team, role = _team_for(request, team_id)
    if not team_permissions.can_manage_wallet(role):
        raise PermissionDenied("Only the team's owner and admins can manage its credits.")
    return team


def _team_page_url(team: Team) -> str | None:
    """The team's own page, as the composition root names it (settings.BILLING_TEAM_URL_NAME)."""
    url_name = getattr(settings, "BILLING_TEAM_URL_NAME", "")
    try:
        return reverse(url_name, args=[team.pk]) if url_name else None
    except NoReverseMatch:
        return None


def _member_rows(team: Team, usage: list[selectors.MemberMonthUsage], bound: MemberCapForm | None) -> list[dict]:
    """One row per member for the caps editor: their cap, what they used this month, and the
    form (the submitted one, with its errors, for the member it was about)."""
    caps = selectors.team_member_caps(team_id=team.pk)
    this_month = selectors.month_start().date()
    used = {row.user_id: row.used for row in usage if row.month == this_month}
    return [
        {
            "membership": membership,
            "cap": caps.get(membership.user_id),
            "used": used.get(membership.user_id, 0),
            "form": bound if bound is not None and bound.prefix == f"cap-{membership.user_id}" else MemberCapForm(
                initial={"monthly_credits": caps.get(membership.user_id)}, prefix=f"cap-{membership.user_id}"
            ),
        }
        for membership in team_members(team_id=team.pk)
    ]


def _page_context(request: HttpRequest, team: Team, role: str, **forms) -> dict:
    available, held = selectors.team_wallet_balance(team_id=team.pk)
    manages = team_permissions.can_manage_wallet(role)
    context = {"team": team, "team_url": _team_page_url(team), "role": role, "manages_wallet": manages,
               "available": available, "held": held}
    if not manages:
        context["usage"] = selectors.team_usage_by_member_month(team_id=team.pk, user_id=request.user.pk)
        context["my_cap"] = selectors.team_member_caps(team_id=team.pk).get(request.user.pk)
        return context
    usage = selectors.team_usage_by_member_month(team_id=team.pk)
    context.update(
        usage=usage,
        members=_member_rows(team, usage, forms.get("cap_form")),
        holds=selectors.open_holds_for_team(team_id=team.pk),
        entries=Paginator(selectors.team_wallet_history(team_id=team.pk), 50).get_page(request.GET.get("page")),
        my_available=selectors.wallet_balance(user=request.user)[0],
        transfer_form=forms.get("transfer_form") or TeamTransferForm(),
        packs=selectors.packs_for_sale(),
        stripe_enabled=services.stripe_checkout_enabled(),
        test_mode=services.purchases_test_mode_enabled(),
    )
    return context


@login_required
@require_GET
def team_credits(request: HttpRequest, team_id) -> HttpResponse:
    team, role = _team_for(request, team_id)
    context = _page_context(request, team, role)
    if request.htmx and request.GET.get("page") and context["manages_wallet"]:
        return render(request, "billing/team_credits.html#history", context)
    return render(request, "billing/team_credits.html", context)


def _back(team: Team) -> HttpResponse:
    return redirect("billing:team_credits", team_id=team.pk)


def _rerender(request: HttpRequest, team: Team, status: int = 400, **forms) -> HttpResponse:
    role = team_permissions.role_of(user=request.user, team_id=team.pk)
    return render(request, "billing/team_credits.html", _page_context(request, team, role, **forms), status=status)


@login_required
@require_POST
def team_transfer(request: HttpRequest, team_id) -> HttpResponse:
    """Move credits from my own wallet into the team's."""
    team = _managed_team(request, team_id)
    form = TeamTransferForm(request.POST)
    if not form.is_valid():
        return _rerender(request, team, transfer_form=form)
    amount = form.cleaned_data["amount"]
    try:
        services.credits_transfer_to_team(
            user=request.user, team=team, amount=amount, idempotency_key=str(form.cleaned_data["token"])
        )
    except services.InsufficientCredits as error:
        form.add_error("amount", f"You have only {error.available:,} credits available to move.")
        return _rerender(request, team, transfer_form=form)
    except services.AlreadyRecorded:
        messages.info(request, "That transfer was already made.")
        return _back(team)
    messages.success(request, f"Moved {amount:,} credits from your wallet to {team.name}.")
    return _back(team)


@login_required
@require_POST
def team_member_cap(request: HttpRequest, team_id, user_id: int) -> HttpResponse:
    """Set a member's monthly cap, or remove it (the "clear" button)."""
    team = _managed_team(request, team_id)
    membership = next((m for m in team_members(team_id=team.pk) if m.user_id == user_id), None)
    if membership is None:
        raise Http404("No such member.")
    member = membership.user
    if "clear" in request.POST:
        services.member_cap_clear(actor=request.user, team=team, member=member)
        messages.success(request, f"{member.email} has no monthly limit now.")
        return _back(team)
    form = MemberCapForm(request.POST, prefix=f"cap-{user_id}")
    if not form.is_valid():
        return _rerender(request, team, cap_form=form)
    cap = services.member_cap_set(
        actor=request.user, team=team, member=member, monthly_credits=form.cleaned_data["monthly_credits"]
    )
    messages.success(request, f"{member.email} may now use {cap.monthly_credits:,} credits a month.")
    return _back(team)


@login_required
@require_POST
def team_checkout(request: HttpRequest, team_id, pack_id: int) -> HttpResponse:
    """Buy a pack for the team with Stripe Checkout; the webhook credits the team's wallet."""
    team = _managed_team(request, team_id)
    pack = get_object_or_404(CreditPack, pk=pack_id, active=True)
    if not services.stripe_checkout_enabled():
        messages.error(request, "Payments are not configured on this server.")
        return _back(team)
    back = request.build_absolute_uri(reverse("billing:checkout_return"))
    try:
        url = services.payment_checkout_start(
            user=request.user, pack=pack, team=team,
            success_url=back + "?session_id={CHECKOUT_SESSION_ID}",
            cancel_url=request.build_absolute_uri(reverse("billing:team_credits", args=[team.pk])),
        )
    except Exception:  # Stripe down, bad key...: tell the user, log the details
        logger.exception("Could not start a Stripe Checkout session for team %s", team.pk)
        messages.error(request, "The payment provider could not be reached. Please try again later.")
        return _back(team)
    return redirect(url, permanent=False)


@login_required
@require_POST
def team_test_purchase(request: HttpRequest, team_id, pack_id: int) -> HttpResponse:
    if not services.purchases_test_mode_enabled():
        raise Http404("Test purchases are disabled.")
    team = _managed_team(request, team_id)
    pack = get_object_or_404(CreditPack, pk=pack_id, active=True)
    payment = services.payment_test_purchase(user=request.user, pack=pack, team=team)
    messages.success(request, f"Test purchase: {payment.credits:,} credits added to {team.name}. No money was charged.")
    return _back(team)
