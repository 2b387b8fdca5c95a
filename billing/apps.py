from django.apps import AppConfig


class BillingConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "billing"
    verbose_name = "Credits and billing"

    def ready(self) -> None:
        from billing import receivers  # noqa: F401  (connects the email_confirmed receiver)
