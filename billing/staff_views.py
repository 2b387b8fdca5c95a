"""Staff pages: find a user, see balance/holds/ledger, grant or revoke, refund a job, usage, CSV."""

from __future__ import annotations

import csv

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth import get_user_model
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

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
        "subject": user,
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
    subject = get_object_or_404(get_user_model(), pk=user_id)
    if request.method == "POST":
        form = AdjustForm(request.POST)
        if form.is_valid():
            try:
                services.credits_adjust(
                    user=subject,
                    amount=form.signed_amount,
                    actor=request.user,
                    reason=form.cleaned_data["reason"],
                    idempotency_key=str(form.cleaned_data["token"]),
                )
            except services.InsufficientCredits as error:
                form.add_error("amount", f"Cannot revoke more than is available ({error.available}).")
            except services.AlreadyRecorded:
                messages.info(request, "That adjustment was already recorded.")
                return redirect("billing:staff_user", user_id=subject.pk)
            else:
                verb = "Granted" if form.signed_amount > 0 else "Revoked"
                messages.success(request, f"{verb} {abs(form.signed_amount):,} credits.")
                return redirect("billing:staff_user", user_id=subject.pk)
        return render(
            request, "billing/staff/user_detail.html", _user_context(request, subject, adjust_form=form), status=400
        )
    return render(request, "billing/staff/user_detail.html", _user_context(request, subject))


@staff_member_required
@require_POST
def refund_job(request: HttpRequest) -> HttpResponse:
    from generation.models import Job

    form = RefundForm(request.POST)
    subject = None
    if form.is_valid():
        job = Job.objects.filter(pk=form.cleaned_data["job_id"]).select_related("user").first()
        if job is None:
            form.add_error("job_id", "No such job.")
        else:
            subject = job.user
            try:
                entry = services.credits_refund_job(job=job, actor=request.user, reason=form.cleaned_data["reason"])
            except (ValueError, services.AlreadyRecorded) as error:
                form.add_error("job_id", str(error))
            else:
                messages.success(request, f"Refunded {entry.amount:,} credits for job {job.pk}.")
                return redirect("billing:staff_user", user_id=subject.pk)
    if subject is None:
        user_id = request.POST.get("user_id", "")
        subject = get_user_model().objects.filter(pk=user_id).first() if user_id.isdigit() else None
    if subject is None:
        messages.error(request, "; ".join(e for errs in form.errors.values() for e in errs) or "Invalid refund.")
        return redirect("billing:staff_users")
    return render(
        request, "billing/staff/user_detail.html", _user_context(request, subject, refund_form=form), status=400
    )


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
    "held_delta", "available_after", "held_after", "job_id", "payment_id", "actor_id", "actor_email",
    "reason", "idempotency_key",
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
                    e.job_id or "", e.payment_id or "", e.actor_id or "", _csv_cell(e.actor.email if e.actor else ""),
                    _csv_cell(e.reason), _csv_cell(e.idempotency_key),
                ]
            )

    name = f"ledger-user-{user.pk}.csv" if user else "ledger.csv"
    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
