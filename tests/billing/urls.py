"""URLs for the billing tests: the project's own, or (while another app's views don't import,
e.g. mid-development) the billing app plus stand-ins for the names base.html links to."""

from django.contrib import admin
from django.http import HttpResponse
from django.urls import include, path

try:
    from studio.urls import urlpatterns  # noqa: F401
except Exception:  # pragma: no cover - only while the rest of the project is unfinished

    def _stub(request, *args, **kwargs):
        return HttpResponse("stub")

    generation_stubs = (
        [path("create/", _stub, name="create"), path("jobs/", _stub, name="job_list")],
        "generation",
    )
    urlpatterns = [
        path("", _stub, name="home"),
        path("admin/", admin.site.urls),
        path("accounts/", include("allauth.urls")),
        path("billing/", include("billing.urls")),
        path("g/", include(generation_stubs)),
    ]
