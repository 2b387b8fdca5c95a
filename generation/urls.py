from django.urls import path

from generation import quote, views

app_name = "generation"
urlpatterns = [
    path("create/", views.create, name="create"),
    path("create/quote/", quote.quote, name="quote"),
    path("jobs/", views.job_list, name="job_list"),
    path("jobs/<uuid:job_id>/", views.job_detail, name="job_detail"),
    path("jobs/<uuid:job_id>/panel/", views.job_panel, name="job_panel"),
    path("jobs/<uuid:job_id>/cancel/", views.job_cancel, name="job_cancel"),
    path("gallery/", views.gallery, name="gallery"),
    path("images/<uuid:image_id>/favourite/", views.image_favourite, name="image_favourite"),
    path("images/<uuid:image_id>/delete/", views.image_delete, name="image_delete"),
    path("images/<uuid:image_id>/", views.image_detail, name="image_detail"),
    path("images/<uuid:image_id>/original.png", views.image_file, name="image_file"),
    path("images/<uuid:image_id>/thumbnail.webp", views.image_thumbnail, name="image_thumbnail"),
]
