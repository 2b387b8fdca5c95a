from django.urls import path

from billing import api_key_views, staff_views, team_views, views

app_name = "billing"

urlpatterns = [
    path("", views.credits_page, name="credits"),
    path("packs/", views.packs_page, name="packs"),
    path("packs/<int:pack_id>/checkout/", views.checkout, name="checkout"),
    path("packs/<int:pack_id>/test-purchase/", views.test_purchase, name="test_purchase"),
    path("checkout/return/", views.checkout_return, name="checkout_return"),
    path("stripe/webhook/", views.stripe_webhook, name="stripe_webhook"),
    path("staff/users/", staff_views.users, name="staff_users"),
    path("staff/users/<int:user_id>/", staff_views.user_detail, name="staff_user"),
    path("staff/teams/<uuid:team_id>/", staff_views.team_detail, name="staff_team"),
    path("staff/refund/", staff_views.refund, name="staff_refund"),
    path("staff/usage/", staff_views.usage, name="staff_usage"),
    path("staff/ledger.csv", staff_views.ledger_csv, name="staff_ledger_csv"),
]

# Team wallets (billing.team_views)
urlpatterns += [
    path("teams/<uuid:team_id>/", team_views.team_credits, name="team_credits"),
    path("teams/<uuid:team_id>/transfer/", team_views.team_transfer, name="team_transfer"),
    path("teams/<uuid:team_id>/members/<int:user_id>/cap/", team_views.team_member_cap, name="team_member_cap"),
    path("teams/<uuid:team_id>/packs/<int:pack_id>/checkout/", team_views.team_checkout, name="team_checkout"),
    path(
        "teams/<uuid:team_id>/packs/<int:pack_id>/test-purchase/",
        team_views.team_test_purchase,
        name="team_test_purchase",
    ),
]

# API keys (billing.api_key_views): made and revoked through accounts, their usage from the ledger
urlpatterns += [
    path("keys/", api_key_views.api_keys, name="api_keys"),
    path("keys/<int:key_id>/", api_key_views.api_key_usage, name="api_key_usage"),
    path("keys/<int:key_id>/usage.csv", api_key_views.api_key_usage_csv, name="api_key_usage_csv"),
    path("keys/<int:key_id>/revoke/", api_key_views.api_key_revoke, name="api_key_revoke"),
    path("teams/<uuid:team_id>/keys/", api_key_views.team_api_keys, name="team_api_keys"),
]
