from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from billing.selectors import subject_charge, subject_has_open_hold
from generation import services
from generation.models import Image, Job


class ImageInline(admin.TabularInline):
    model = Image
    extra = 0
    fields = ("index", "seed", "width", "height", "file", "created_at")
    readonly_fields = fields
    can_delete = False


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    """Read-only: jobs change state only through generation.services. A job is deleted only
    through `services.job_delete`, which refuses while it holds credits (queued, running, or a
    hold not yet settled): deleting it then would strand them."""

    list_display = ("id", "user", "kind", "state", "prompt", "width", "height", "steps", "num_images", "cost", "attempts", "created_at")
    list_filter = ("kind", "state", "sampler", "model_name")
    search_fields = ("id", "prompt", "user__email")
    readonly_fields = [*(field.name for field in Job._meta.fields), "credits"]
    inlines = [ImageInline]

    @admin.display(description="Credits")
    def credits(self, obj: Job):
        """What billing recorded for this job, and where staff refund it (by its subject)."""
        charge = subject_charge(subject=obj.billing_subject)
        return format_html(
            "{} reserved, {} spent, {} released, {} refunded, {} on hold · subject <code>{}</code> · "
            '<a href="{}">refund on the credits page</a>',
            charge["reserved"], charge["captured"], charge["released"], charge["refunded"], charge["on_hold"],
            obj.billing_subject, reverse("billing:staff_user", args=[obj.user_id]),
        )

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        if obj is not None and (obj.is_active or subject_has_open_hold(subject=obj.billing_subject)):
            return False
        return super().has_delete_permission(request, obj)

    def delete_model(self, request, obj):
        services.job_delete(job=obj)

    def delete_queryset(self, request, queryset):
        kept = []
        for job in queryset:
            try:
                services.job_delete(job=job)
            except services.JobNotDeletable:
                kept.append(job)
        if kept:
            self.message_user(
                request, f"{len(kept)} job(s) kept: they still hold credits (queued, running or on hold).",
                messages.WARNING,
            )


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ("id", "owner", "job", "seed", "width", "height", "created_at")
    search_fields = ("id", "owner__email", "job__prompt")
    readonly_fields = [field.name for field in Image._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
