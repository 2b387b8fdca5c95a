"""The one way an image file leaves the server: through storage, after the caller's permission or
link check. Private pages and public links both answer through these functions."""

from __future__ import annotations

import io
import struct

from django.core.files.storage import default_storage
from django.http import FileResponse, Http404

from generation.models import Image

PRIVATE_CACHE = "private, max-age=86400"
# A public link can be revoked at any moment: nothing of it may stay in a browser's or proxy's cache.
SHARED_CACHE = "no-store"


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks that carry words, not pixels: the A1111 "parameters" text (the prompt) lives in tEXt/iTXt.
PNG_TEXT_CHUNKS = {b"tEXt", b"iTXt", b"zTXt", b"eXIf"}


def png_without_text(data: bytes) -> bytes:
    """The same PNG without its text and EXIF chunks (pixels untouched, nothing re-encoded), for a
    public link whose maker chose not to show the prompt. Anything that is not a PNG is refused."""
    if not data.startswith(PNG_SIGNATURE):
        raise Http404("The image file is not a PNG.")
    kept, position = [PNG_SIGNATURE], len(PNG_SIGNATURE)
    while position + 8 <= len(data):
        (length,) = struct.unpack(">I", data[position:position + 4])
        end = position + 12 + length  # length, type, data, CRC
        if data[position + 4:position + 8] not in PNG_TEXT_CHUNKS:
            kept.append(data[position:end])
        position = end
    return b"".join(kept)


def serve_file(name: str, content_type: str, *, download_name: str | None = None,
               cache_control: str = PRIVATE_CACHE, strip_png_text: bool = False) -> FileResponse:
    try:
        handle = default_storage.open(name, "rb")
    except FileNotFoundError:
        raise Http404("The image file is missing.") from None
    if strip_png_text:
        with handle:
            handle = io.BytesIO(png_without_text(handle.read()))
    response = FileResponse(handle, content_type=content_type, as_attachment=bool(download_name),
                            filename=download_name or "")
    response["Cache-Control"] = cache_control
    response["X-Content-Type-Options"] = "nosniff"  # never sniffed into HTML, whatever the bytes
    return response


def image_original(image: Image, *, download: bool = False, cache_control: str = PRIVATE_CACHE,
                   strip_png_text: bool = False) -> FileResponse:
    download_name = f"studio-{image.seed}-{str(image.id)[:8]}.png" if download else None
    return serve_file(image.file.name, "image/png", download_name=download_name, cache_control=cache_control,
                      strip_png_text=strip_png_text)


def image_thumbnail(image: Image, *, cache_control: str = PRIVATE_CACHE) -> FileResponse:
    if image.thumbnail:
        return serve_file(image.thumbnail.name, "image/webp", cache_control=cache_control)
    return serve_file(image.file.name, "image/png", cache_control=cache_control)
