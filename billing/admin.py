"""Django admin for billing. The ledger, wallets and payments are read-only here: credits move only
through services (the staff pages at /billing/staff/ grant, revoke and refund). Prices and packs
are edited here."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from billing.models import CreditPack, LedgerEntry, ModelPrice, Payment, PriceSettings, StripeEvent, Wallet


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Wallet)
class WalletAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "owner_user", "owner_team", "available", "held", "updated_at", "manage"]
    search_fields = ["owner_user__email", "owner_user__username", "=owner_user__id", "owner_team__name"]
    list_select_related = ["owner_user", "owner_team"]
    readonly_fields = ["owner_user", "owner_team", "available", "held", "created_at", "updated_at", "manage"]

    @admin.display(description="Grant, revoke, refund")
    def manage(self, obj: Wallet):
        if obj.owner_team_id:
            url = reverse("billing:staff_team", args=[obj.owner_team_id])
        elif obj.owner_user_id:
            url = reverse("billing:staff_user", args=[obj.owner_user_id])
        else:
            return "-"
        return format_html('<a href="{}">Open the credits page</a>', url)


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "wallet", "kind", "amount", "available_delta", "held_delta", "available_after", "actor", "spender", "reason"]
    list_filter = ["kind", "created_at"]
    # (The job foreign key became `subject` in migration 0006; searching "=job__id" raised a FieldError.)
    search_fields = ["idempotency_key", "reason", "subject", "wallet__owner_user__email", "wallet__owner_team__name"]
    list_select_related = ["wallet__owner_user", "wallet__owner_team", "actor", "spender"]
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in LedgerEntry._meta.fields]

    def get_actions(self, request):
        return {}


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "user", "pack_name", "credits", "amount_display", "provider", "status", "paid_at"]
    list_filter = ["status", "provider"]
    search_fields = ["user__email", "stripe_checkout_session_id", "stripe_payment_intent_id", "=id"]
    readonly_fields = [f.name for f in Payment._meta.fields]


@admin.register(StripeEvent)
class StripeEventAdmin(ReadOnlyAdmin):
    list_display = ["received_at", "event_id", "type", "outcome", "payment"]
    search_fields = ["event_id", "type"]
    readonly_fields = [f.name for f in StripeEvent._meta.fields]


@admin.register(PriceSettings)
class PriceSettingsAdmin(admin.ModelAdmin):
    list_display = ["__str__", "reference_credits", "reference_width", "reference_height", "reference_steps", "signup_credits", "updated_at", "updated_by"]
    readonly_fields = ["updated_at", "updated_by"]

    def has_add_permission(self, request) -> bool:
        return not PriceSettings.objects.exists()

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def save_model(self, request, obj, form, change):
        obj.pk = 1
        obj.updated_by = request.user
        super().save_model(request, obj, form, change)


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = ["model_name", "multiplier"]
    search_fields = ["model_name"]


@admin.register(CreditPack)
class CreditPackAdmin(admin.ModelAdmin):
    list_display = ["name", "credits", "price_display", "currency", "active", "sort_order"]
    list_editable = ["active", "sort_order"]

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # deactivate instead: payments keep a name and price snapshot either way
