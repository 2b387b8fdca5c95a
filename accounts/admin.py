from django.contrib import admin

from accounts.models import Signup


@admin.register(Signup)
class SignupAdmin(admin.ModelAdmin):
    list_display = ["user", "address", "email_domain", "free_credits_due", "created_at"]
    list_filter = ["free_credits_due"]
    search_fields = ["user__email", "address", "email_domain", "mailbox"]
    readonly_fields = ["user", "address", "email_domain", "mailbox", "created_at"]
