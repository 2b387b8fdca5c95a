from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from generation import views as generation_views

urlpatterns = [
    path("", generation_views.home, name="home"),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
    path("billing/", include("billing.urls")),
    path("", include("generation.urls")),
    path("favicon.ico", RedirectView.as_view(url="/static/favicon.svg", permanent=True)),
]
