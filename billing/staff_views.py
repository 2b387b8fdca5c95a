"""Staff pages: find a user, see balance/holds/ledger, grant or revoke, refund by subject, usage, CSV."""

from __future__ import annotations

import csv

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth import get_user_model
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.models import Team
from billing import selectors, services
from billing.charts import usage_bar_chart
from billing.forms import AdjustForm, LedgerExportForm, RefundForm, UserSearchForm


@staff_member_required
@require_GET
def users(request: HttpRequest) -> HttpResponse:
    form = UserSearchForm(request.GET)
    if not form.is_valid():
        return render(request, "billing/staff/users.html", {"query": "", "users": [], "form": form}, status=400)
    query = form.cleaned_data["q"]
    return render(
        request, "billing/staff/users.html",
        {"query": query, "users": selectors.users_search(query=query), "form": form},
    )


def _user_context(request: HttpRequest, user, *, adjust_form=None, refund_form=None) -> dict:
    wallet = selectors.wallet_for_user(user=user)
    page = Paginator(selectors.ledger_for_user(user=user), 100).get_page(request.GET.get("page"))
    return {
        "customer": user,
        "wallet": wallet,
        "available": wallet.available if wallet else 0,
        "held": wallet.held if wallet else 0,
        "holds": selectors.open_holds_for_user(user=user),
        "entries": page,
        "payments": selectors.payments_for_user(user=user)[:50],
        "adjust_form": adjust_form or AdjustForm(),
        "refund_form": refund_form or RefundForm(),
    }


@staff_member_required
@require_http_methods(["GET", "HEAD", "POST"])
def user_detail(request: HttpRequest, user_id: int) -> HttpResponse:
    customer = get_object_or_404(get_user_model(), pk=user_id)
    if request.method == "POST":
        form = AdjustForm(request.POST)
        if form.is_valid():
            try:
                services.credits_adjust(
                    user=customer,
                    amount=form.signed_amount,
                    actor=request.user,
                    reason=form.cleaned_data["reason"],
                    idempotency_key=str(form.cleaned_data["token"]),
                )
            except services.InsufficientCredits as error:
                form.add_error("amount", f"Cannot revoke more than is available ({error.available}).")
            except services.AlreadyRecorded:
                messages.info(request, "That adjustment was already recorded.")
                return redirect("billing:staff_user", user_id=customer.pk)
            else:
                verb = "Granted" if form.signed_amount > 0 else "Revoked"
                messages.success(request, f"{verb} {abs(form.signed_amount):,} credits.")
                return redirect("billing:staff_user", user_id=customer.pk)
        return render(
            request, "billing/staff/user_detail.html", _user_context(request, customer, adjust_form=form), status=400
        )
    return render(request, "billing/staff/user_detail.html", _user_context(request, customer))


def _staff_wallet_redirect(wallet) -> HttpResponse:
    if wallet.owner_team_id:
        return redirect("billing:staff_team", team_id=wallet.owner_team_id)
    return redirect("billing:staff_user", user_id=wallet.owner_user_id)


@staff_member_required
@require_POST
def refund(request: HttpRequest) -> HttpResponse:
    """Refund what a subject (e.g. `job:<id>`) was charged, to the wallet (a user's or a team's)
    it was charged to."""
    form = RefundForm(request.POST)
    owner = wallet = None
    if form.is_valid():
        subject = form.cleaned_data["subject"]
        wallet = selectors.subject_wallet(subject=subject)
        owner = wallet.owner_user if wallet is not None else None
        try:
            entry = services.credits_refund(subject=subject, actor=request.user, reason=form.cleaned_data["reason"])
        except (ValueError, services.AlreadyRecorded) as error:
            form.add_error("subject", str(error))
        else:
            messages.success(request, f"Refunded {entry.amount:,} credits for {subject}.")
            return _staff_wallet_redirect(wallet)
    if wallet is not None and wallet.owner_team_id:
        team = get_object_or_404(Team, pk=wallet.owner_team_id)
        return render(request, "billing/staff/team_detail.html", _team_context(request, team, refund_form=form),
                      status=400)
    if owner is None:
        user_id = request.POST.get("user_id", "")
        if user_id.isascii() and user_id.isdigit() and len(user_id) <= 18:
            owner = get_user_model().objects.filter(pk=int(user_id)).first()
    if owner is None:
        messages.error(request, "; ".join(e for errs in form.errors.values() for e in errs) or "Invalid refund.")
        return redirect("billing:staff_users")
    return render(
        request, "billing/staff/user_detail.html", _user_context(request, owner, refund_form=form), status=400
    )


def _team_context(request: HttpRequest, team, *, refund_form=None) -> dict:
    available, held = selectors.team_wallet_balance(team_id=team.pk)
    wallet = selectors.wallet_for_team(team_id=team.pk)
    page = Paginator(selectors.team_wallet_history(team_id=team.pk), 100).get_page(request.GET.get("page"))
    return {
        "team": team,
        "available": available,
        "held": held,
        "holds": selectors.open_holds_for_team(team_id=team.pk),
        "entries": page,
        "payments": selectors.payments_for_wallet(wallet_id=wallet.pk) if wallet else [],
        "usage": selectors.team_usage_by_member_month(team_id=team.pk, months=3),
        "refund_form": refund_form or RefundForm(),
    }


@staff_member_required
@require_GET
def team_detail(request: HttpRequest, team_id) -> HttpResponse:
    """A team's wallet for staff: balance, holds, usage, ledger, purchases; refunds by subject."""
    team = get_object_or_404(Team, pk=team_id)
    return render(request, "billing/staff/team_detail.html", _team_context(request, team))


@staff_member_required
@require_GET
def usage(request: HttpRequest) -> HttpResponse:
    try:
        days = min(max(int(request.GET.get("days", 30)), 7), 365)
    except ValueError:
        days = 30
    rows = selectors.usage_per_day(days=days)
    totals = {key: sum(getattr(r, key) for r in rows) for key in ("granted", "purchased", "spent")}
    return render(
        request,
        "billing/staff/usage.html",
        {
            "days": days,
            "rows": rows,
            "totals": totals,
            "chart": usage_bar_chart(rows),
            "top_spenders": selectors.top_spenders(days=days),
        },
    )


class _Echo:
    def write(self, value):
        return value


CSV_COLUMNS = [
    "id", "created_at", "user_id", "user_email", "wallet_id", "kind", "amount", "available_delta",
    "held_delta", "available_after", "held_after", "subject", "payment_id", "actor_id", "actor_email",
    "reason", "idempotency_key", "team_id", "spender_id",
]


def _csv_cell(value) -> str:
    """Neutralise spreadsheet formulas (CSV injection) in free text."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not text.lstrip("+-").isdigit() else text


@staff_member_required
@require_GET
def ledger_csv(request: HttpRequest) -> StreamingHttpResponse:
    form = LedgerExportForm(request.GET)
    if not form.is_valid():
        return HttpResponseBadRequest("user must be a user id.", content_type="text/plain")
    user = None
    if (user_id := form.cleaned_data["user"]) is not None:
        user = get_object_or_404(get_user_model(), pk=user_id)
    entries = selectors.ledger_for_export(user=user).select_related("wallet__owner_user")
    writer = csv.writer(_Echo())

    def rows():
        yield writer.writerow(CSV_COLUMNS)
        for e in entries.iterator(chunk_size=2000):
            owner = e.wallet.owner_user
            yield writer.writerow(
                [
                    e.pk, e.created_at.isoformat(), owner.pk if owner else "", _csv_cell(owner.email if owner else ""),
                    e.wallet_id, e.kind, e.amount, e.available_delta, e.held_delta, e.available_after, e.held_after,
                    _csv_cell(e.subject), e.payment_id or "", e.actor_id or "", _csv_cell(e.actor.email if e.actor else ""),
                    _csv_cell(e.reason), _csv_cell(e.idempotency_key), e.wallet.owner_team_id or "",
                    e.spender_id or "",
                ]
            )

    name = f"ledger-user-{user.pk}.csv" if user else "ledger.csv"
    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
