from django.contrib import admin

from accounts.models import ApiKey, Signup, Team


@admin.register(Signup)
class SignupAdmin(admin.ModelAdmin):
    list_display = ["user", "address", "email_domain", "free_credits_due", "created_at"]
    list_filter = ["free_credits_due"]
    search_fields = ["user__email", "address", "email_domain", "mailbox"]
    readonly_fields = ["user", "address", "email_domain", "mailbox", "created_at"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Look up a key by its prefix (e.g. from a log line). Keys are made and revoked on the API keys
    pages, through accounts.services; the hash is never shown."""

    list_display = ["prefix", "name", "owner_user", "owner_team", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["prefix", "name", "owner_user__email", "owner_team__name"]
    fields = ["prefix", "name", "owner_user", "owner_team", "created_by", "scopes", "monthly_credit_cap",
              "created_at", "last_used_at", "revoked_at"]
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    """Staff set a team's share of the queue here (docs/teams.md, "Fair share"); members, roles and
    wallets change through the team pages and their services, never here."""

    list_display = ["name", "created_by", "queue_weight", "created_at"]
    search_fields = ["name", "created_by__email"]
    fields = ["name", "created_by", "created_at", "queue_weight"]
    readonly_fields = ["name", "created_by", "created_at"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
