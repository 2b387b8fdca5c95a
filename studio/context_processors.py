from pathlib import Path

from django.conf import settings

LOCAL_MAIL_BACKEND = "studio.mail.ConsoleAndFileEmailBackend"


def local_mail_dir() -> str | None:
    """Where the embedded default keeps sent mail (relative to the project when inside it), or None when
    mail really leaves (SMTP): pages that say "we sent you an email" point there."""
    if settings.EMAIL_BACKEND != LOCAL_MAIL_BACKEND:
        return None
    path = Path(settings.EMAIL_FILE_PATH)
    try:
        return f"{path.relative_to(settings.BASE_DIR)}/"
    except ValueError:
        return f"{path}/"


def site(request):
    return {"SITE_NAME": "Studio", "DEBUG": settings.DEBUG, "LOCAL_MAIL_DIR": local_mail_dir()}
