from django.contrib import admin

from generation.models import Image, Job


class ImageInline(admin.TabularInline):
    model = Image
    extra = 0
    fields = ("index", "seed", "width", "height", "file", "created_at")
    readonly_fields = fields
    can_delete = False


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    """Read-only: jobs change state only through generation.services."""

    list_display = ("id", "user", "state", "prompt", "width", "height", "steps", "num_images", "cost", "attempts", "created_at")
    list_filter = ("state", "sampler", "model_name")
    search_fields = ("id", "prompt", "user__email")
    readonly_fields = [field.name for field in Job._meta.fields]
    inlines = [ImageInline]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ("id", "owner", "job", "seed", "width", "height", "created_at")
    search_fields = ("id", "owner__email", "job__prompt")
    readonly_fields = [field.name for field in Image._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
