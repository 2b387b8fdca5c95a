"""User-facing billing pages: credits and history, packs, checkout, the webhook."""

from __future__ import annotations

import logging

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from billing import selectors, services
from billing.forms import CheckoutReturnForm
from billing.models import CreditPack, Payment

logger = logging.getLogger(__name__)


@login_required
@require_GET
def credits_page(request: HttpRequest) -> HttpResponse:
    available, held = selectors.wallet_balance(user=request.user)
    page = Paginator(selectors.ledger_for_user(user=request.user), 50).get_page(request.GET.get("page"))
    context = {
        "available": available,
        "held": held,
        "holds": selectors.open_holds_for_user(user=request.user),
        "entries": page,
        "payments": selectors.payments_for_user(user=request.user)[:50],
    }
    if request.htmx and request.GET.get("page"):
        return render(request, "billing/credits.html#history", context)
    return render(request, "billing/credits.html", context)


@login_required
@require_GET
def packs_page(request: HttpRequest) -> HttpResponse:
    available, _ = selectors.wallet_balance(user=request.user)
    return render(
        request,
        "billing/packs.html",
        {
            "packs": selectors.packs_for_sale(),
            "available": available,
            "stripe_enabled": services.stripe_checkout_enabled(),
            "test_mode": services.purchases_test_mode_enabled(),
            "reference_cost": services.job_price(width=512, height=512, steps=30, num_images=1),
        },
    )


@login_required
@require_POST
def checkout(request: HttpRequest, pack_id: int) -> HttpResponse:
    pack = get_object_or_404(CreditPack, pk=pack_id, active=True)
    if not services.stripe_checkout_enabled():
        messages.error(request, "Payments are not configured on this server.")
        return redirect("billing:packs")
    back = request.build_absolute_uri(reverse("billing:checkout_return"))
    try:
        url = services.payment_checkout_start(
            user=request.user,
            pack=pack,
            success_url=back + "?session_id={CHECKOUT_SESSION_ID}",
            cancel_url=request.build_absolute_uri(reverse("billing:packs")),
        )
    except Exception:  # Stripe down, bad key...: tell the user, log the details
        logger.exception("Could not start a Stripe Checkout session")
        messages.error(request, "The payment provider could not be reached. Please try again later.")
        return redirect("billing:packs")
    return redirect(url, permanent=False)


@login_required
@require_GET
def checkout_return(request: HttpRequest) -> HttpResponse:
    """Where Stripe sends the browser back. It proves nothing: credits come from the webhook."""
    form = CheckoutReturnForm(request.GET)
    if not form.is_valid():
        return HttpResponseBadRequest("Invalid session id.", content_type="text/plain")
    payment = None
    if session_id := form.cleaned_data["session_id"]:
        payment = Payment.objects.filter(user=request.user, stripe_checkout_session_id=session_id).first()
    return render(request, "billing/checkout_return.html", {"payment": payment})


@login_required
@require_POST
def test_purchase(request: HttpRequest, pack_id: int) -> HttpResponse:
    if not services.purchases_test_mode_enabled():
        raise Http404("Test purchases are disabled.")
    pack = get_object_or_404(CreditPack, pk=pack_id, active=True)
    payment = services.payment_test_purchase(user=request.user, pack=pack)
    messages.success(request, f"Test purchase: {payment.credits:,} credits added. No money was charged.")
    return redirect("billing:credits")


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> HttpResponse:
    try:
        outcome = services.stripe_webhook_receive(
            payload=request.body, signature=request.headers.get("Stripe-Signature")
        )
    except services.WebhookRejected as rejected:
        logger.warning("Rejected a Stripe webhook: %s", rejected)
        return HttpResponseBadRequest("invalid webhook", content_type="text/plain")
    return HttpResponse(outcome, content_type="text/plain")
