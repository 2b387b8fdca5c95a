from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from generation import pricing_views
from generation import views as generation_views
from studio.api import API_PATHS, api, api_not_found, problem_type_page

urlpatterns = [
    path("", generation_views.home, name="home"),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
    path("billing/", include("billing.urls")),
    path("pricing/", pricing_views.pricing, name="pricing"),
    path("api/problems/<slug:slug>", problem_type_page, name="api_problem"),
    path("", api.urls),  # /api/v1/... and /sdapi/v1/... (studio/api.py)
    re_path(API_PATHS, api_not_found),  # unknown routes under /api/ and /sdapi/ answer problem+json too
    path("", include("generation.urls")),
    path("favicon.ico", RedirectView.as_view(url="/static/favicon.svg", permanent=True)),
]
