"""The one way an image file leaves the server: through storage, after the caller's permission or
link check. Private pages and public links both answer through these functions."""

from __future__ import annotations

from django.core.files.storage import default_storage
from django.http import FileResponse, Http404

from generation.models import Image

PRIVATE_CACHE = "private, max-age=86400"
# A public link can be revoked at any moment: nothing of it may stay in a browser's or proxy's cache.
SHARED_CACHE = "no-store"


def serve_file(name: str, content_type: str, *, download_name: str | None = None,
               cache_control: str = PRIVATE_CACHE) -> FileResponse:
    try:
        handle = default_storage.open(name, "rb")
    except FileNotFoundError:
        raise Http404("The image file is missing.") from None
    response = FileResponse(handle, content_type=content_type, as_attachment=bool(download_name),
                            filename=download_name or "")
    response["Cache-Control"] = cache_control
    response["X-Content-Type-Options"] = "nosniff"  # never sniffed into HTML, whatever the bytes
    return response


def image_original(image: Image, *, download: bool = False, cache_control: str = PRIVATE_CACHE) -> FileResponse:
    download_name = f"studio-{image.seed}-{str(image.id)[:8]}.png" if download else None
    return serve_file(image.file.name, "image/png", download_name=download_name, cache_control=cache_control)


def image_thumbnail(image: Image, *, cache_control: str = PRIVATE_CACHE) -> FileResponse:
    if image.thumbnail:
        return serve_file(image.thumbnail.name, "image/webp", cache_control=cache_control)
    return serve_file(image.file.name, "image/png", cache_control=cache_control)
