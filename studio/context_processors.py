from django.conf import settings


def site(request):
    return {"SITE_NAME": "Studio", "DEBUG": settings.DEBUG}
