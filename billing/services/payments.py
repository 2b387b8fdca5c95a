"""Buying credit packs: Stripe Checkout, the signed webhook, and the opt-in test purchase.

Nothing about a payment is trusted from the browser: the browser only learns where to go.
Credits arrive when a webhook whose signature verifies with STRIPE_WEBHOOK_SECRET says the
Checkout Session is paid, for the amount and currency we asked for.
"""

from __future__ import annotations

import json
import logging
import time

import stripe
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing.models import CreditPack, Payment, PaymentProvider, PaymentStatus, StripeEvent
from billing.services.grants import credits_purchase
from billing.services.ledger import wallet_get_or_create_for_team, wallet_get_or_create_for_user
from billing.services.teams import assert_manages_team_wallet

logger = logging.getLogger(__name__)


class PaymentsNotConfigured(Exception):
    pass


class WebhookRejected(Exception):
    """The request is not a genuine, fresh Stripe event: answer 400."""


def stripe_checkout_enabled() -> bool:
    return bool(getattr(settings, "STRIPE_SECRET_KEY", "") and getattr(settings, "STRIPE_WEBHOOK_SECRET", ""))


def purchases_test_mode_enabled() -> bool:
    return bool(getattr(settings, "STUDIO_BILLING_TEST_PURCHASES", False))


def _new_payment(*, user, pack: CreditPack, provider: str, team=None) -> Payment:
    """A pending Payment by `user`, crediting their own wallet or, with `team`, the team's (only
    its owner and admins may buy for it)."""
    if team is None:
        wallet = wallet_get_or_create_for_user(user=user)
    else:
        assert_manages_team_wallet(user=user, team=team)
        wallet = wallet_get_or_create_for_team(team=team)
    return Payment.objects.create(
        user=user,
        wallet=wallet,
        pack=pack,
        pack_name=pack.name,
        credits=pack.credits,
        amount_cents=pack.price_cents,
        currency=pack.currency.lower(),
        provider=provider,
    )


def payment_checkout_start(*, user, pack: CreditPack, success_url: str, cancel_url: str, team=None) -> str:
    """Create a pending Payment and a Stripe Checkout Session for it; return the URL to send the user to.
    With `team`, the credits go to the team's wallet when Stripe confirms the payment.

    The Payment row is committed before Stripe is called (no transaction held open over the network).
    """
    if not stripe_checkout_enabled():
        raise PaymentsNotConfigured("Payments are not configured.")
    if not pack.active:
        raise ValueError("This pack is not for sale.")
    with transaction.atomic():
        payment = _new_payment(user=user, pack=pack, provider=PaymentProvider.STRIPE, team=team)
    for_team = f" for team {team.name}" if team is not None else ""
    session = stripe.checkout.Session.create(
        api_key=settings.STRIPE_SECRET_KEY,
        mode="payment",
        line_items=[
            {
                "quantity": 1,
                "price_data": {
                    "currency": payment.currency,
                    "unit_amount": payment.amount_cents,
                    "product_data": {"name": f"{payment.pack_name} ({payment.credits:,} credits){for_team}"},
                },
            }
        ],
        client_reference_id=str(payment.pk),
        customer_email=getattr(user, "email", None) or None,
        metadata={"payment_id": str(payment.pk)},
        success_url=success_url,
        cancel_url=cancel_url,
        idempotency_key=f"checkout:{payment.pk}",
    )
    with transaction.atomic():
        # A webhook may have raced us and set it already; only fill an empty one.
        Payment.objects.filter(pk=payment.pk, stripe_checkout_session_id__isnull=True).update(
            stripe_checkout_session_id=session["id"]
        )
    return session["url"]


@transaction.atomic
def payment_test_purchase(*, user, pack: CreditPack, team=None) -> Payment:
    """Test mode only (STUDIO_BILLING_TEST_PURCHASES): a purchase that moves no money, for the
    user's own wallet or, with `team`, the team's."""
    if not purchases_test_mode_enabled():
        raise PaymentsNotConfigured("Test purchases are disabled.")
    if not pack.active:
        raise ValueError("This pack is not for sale.")
    payment = _new_payment(user=user, pack=pack, provider=PaymentProvider.TEST, team=team)
    payment.status = PaymentStatus.PAID
    payment.paid_at = timezone.now()
    payment.save(update_fields=["status", "paid_at"])
    credits_purchase(payment=payment)
    return payment


# --- webhook -------------------------------------------------------------------------------------


def stripe_webhook_receive(*, payload: bytes, signature: str | None) -> str:
    """Verify and apply one webhook delivery. Returns a short outcome; raises WebhookRejected.

    Idempotent by event id: the StripeEvent row is inserted in the same transaction as the
    credits, so a duplicate (replayed, redelivered or concurrent) finds it or hits the primary key.
    """
    secret = getattr(settings, "STRIPE_WEBHOOK_SECRET", "")
    if not secret:
        raise WebhookRejected("Webhooks are not configured.")
    tolerance = int(getattr(settings, "STRIPE_WEBHOOK_TOLERANCE_SECONDS", 300))
    try:
        stripe.Webhook.construct_event(payload, signature, secret, tolerance=tolerance)
        _refuse_future_timestamp(signature, tolerance=tolerance)  # Stripe's check only bounds the age
        event = json.loads(payload)  # verified: parse it as plain data
        event_id, event_type = event["id"], event["type"]
        obj = event["data"]["object"]
        if not isinstance(event_id, str) or not isinstance(obj, dict):
            raise ValueError("malformed event")
    except (stripe.SignatureVerificationError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise WebhookRejected(str(exc) or exc.__class__.__name__) from exc

    if StripeEvent.objects.filter(pk=event_id).exists():
        return "duplicate"
    try:
        with transaction.atomic():
            record = StripeEvent.objects.create(
                event_id=event_id, type=str(event_type)[:100], livemode=bool(event.get("livemode"))
            )
            outcome = _apply_event(record=record, event_type=event_type, obj=obj)
            record.outcome = outcome[:200]
            record.save(update_fields=["outcome", "payment"])
    except IntegrityError:
        if StripeEvent.objects.filter(pk=event_id).exists():
            return "duplicate"
        raise
    return outcome


def _refuse_future_timestamp(signature: str, *, tolerance: int) -> None:
    """A verified signature with a timestamp beyond the tolerance in the future is refused too: a
    secret that leaked could otherwise sign events that stay "fresh" for as long as it likes."""
    stamps = [part[2:] for part in signature.split(",") if part.startswith("t=")]
    if len(stamps) != 1 or not stamps[0].isascii() or not stamps[0].isdigit() or len(stamps[0]) > 12:
        raise ValueError("malformed timestamp")
    if int(stamps[0]) > time.time() + tolerance:
        raise ValueError("timestamp in the future")


def _payment_for_session(obj: dict) -> Payment | None:
    metadata = obj.get("metadata") or {}
    payment_id = metadata.get("payment_id") or obj.get("client_reference_id")
    try:
        return Payment.objects.select_for_update().filter(pk=payment_id).first() if payment_id else None
    except (ValueError, Exception):  # not a UUID
        return None


def _apply_event(*, record: StripeEvent, event_type: str, obj: dict) -> str:
    if event_type not in {
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
        "checkout.session.async_payment_failed",
        "checkout.session.expired",
    }:
        return "ignored: event type"
    payment = _payment_for_session(obj)
    if payment is None:
        logger.warning("Stripe event %s for an unknown payment", record.event_id)
        return "ignored: unknown payment"
    record.payment = payment
    session_id = obj.get("id")
    if payment.stripe_checkout_session_id and session_id != payment.stripe_checkout_session_id:
        logger.error("Stripe event %s: session %s is not payment %s's", record.event_id, session_id, payment.pk)
        return "ignored: session mismatch"

    if event_type in {"checkout.session.expired", "checkout.session.async_payment_failed"}:
        if payment.status == PaymentStatus.PENDING:
            payment.status = PaymentStatus.EXPIRED
            payment.save(update_fields=["status"])
            return "expired"
        return "ignored: payment not pending"

    if obj.get("payment_status") != "paid":
        return "waiting: not paid yet"
    if obj.get("amount_total") != payment.amount_cents or str(obj.get("currency", "")).lower() != payment.currency:
        logger.error("Stripe event %s: amount does not match payment %s", record.event_id, payment.pk)
        return "ignored: amount mismatch"
    if payment.status == PaymentStatus.PAID:
        return "duplicate: payment already paid"
    payment.status = PaymentStatus.PAID
    payment.paid_at = timezone.now()
    payment.stripe_checkout_session_id = payment.stripe_checkout_session_id or session_id
    payment.stripe_payment_intent_id = str(obj.get("payment_intent") or "")[:255]
    payment.save(update_fields=["status", "paid_at", "stripe_checkout_session_id", "stripe_payment_intent_id"])
    credits_purchase(payment=payment)
    return "paid"
