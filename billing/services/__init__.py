"""Every change to money goes through here (HackSoft style: keyword-only, typed, atomic).

    credits_reserve / credits_capture / credits_release   a hold's lifecycle, keyed by subject
    credits_grant_signup / credits_adjust / credits_refund / credits_purchase
    payment_checkout_start / payment_test_purchase / stripe_webhook_receive
    credits_transfer_to_team / member_cap_set / member_cap_clear   team wallets (billing.services.teams)
    job_price, training_price, model_price_set (billing.pricing, re-exported)
"""

from billing.pricing import job_price, model_price_set, training_price
from billing.services.credits import credits_capture, credits_refund, credits_release, credits_reserve
from billing.services.grants import credits_adjust, credits_grant_signup, credits_purchase
from billing.services.ledger import (
    AlreadyRecorded,
    ApiKeyCapReached,
    InsufficientCredits,
    MemberCapReached,
    wallet_get_or_create_for_team,
    wallet_get_or_create_for_user,
)
from billing.services.payments import (
    PaymentsNotConfigured,
    WebhookRejected,
    payment_checkout_start,
    payment_test_purchase,
    stripe_checkout_enabled,
    stripe_webhook_receive,
    purchases_test_mode_enabled,
)
from billing.services.teams import (
    NotATeamMember,
    TeamWalletNotAllowed,
    Transfer,
    credits_transfer_to_team,
    member_cap_clear,
    member_cap_set,
)
from billing.subjects import InvalidSubject

__all__ = [
    "model_price_set",
    "AlreadyRecorded",
    "ApiKeyCapReached",
    "InsufficientCredits",
    "InvalidSubject",
    "MemberCapReached",
    "NotATeamMember",
    "TeamWalletNotAllowed",
    "Transfer",
    "PaymentsNotConfigured",
    "WebhookRejected",
    "credits_adjust",
    "credits_capture",
    "credits_grant_signup",
    "credits_purchase",
    "credits_refund",
    "credits_release",
    "credits_reserve",
    "credits_transfer_to_team",
    "job_price",
    "training_price",
    "member_cap_clear",
    "member_cap_set",
    "payment_checkout_start",
    "payment_test_purchase",
    "stripe_checkout_enabled",
    "stripe_webhook_receive",
    "purchases_test_mode_enabled",
    "wallet_get_or_create_for_team",
    "wallet_get_or_create_for_user",
]
