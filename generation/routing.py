import time
from urllib.parse import urlencode

from django.urls import path

from generation.consumers import GalleryConsumer, JobConsumer, RecentConsumer

websocket_urlpatterns = [
    path("ws/jobs/<uuid:job_id>/", JobConsumer.as_asgi()),
    path("ws/gallery/", GalleryConsumer.as_asgi()),
    path("ws/teams/<uuid:team_id>/gallery/", GalleryConsumer.as_asgi()),
    path("ws/recent/", RecentConsumer.as_asgi()),
]


def gallery_live_url(*, filters: dict, here: str, team_id=None) -> str | None:
    """The websocket a gallery page listens on for new images (its `live_url`), or None where a
    new image does not belong at the top of what the page shows: a search, a filter, oldest
    first, a later page. `filters` are selectors.gallery_page's keyword arguments."""
    if any(filters.values()):
        return None
    path = f"/ws/teams/{team_id}/gallery/" if team_id else "/ws/gallery/"
    return f"{path}?{urlencode({'since': int(time.time()), 'here': here})}"
