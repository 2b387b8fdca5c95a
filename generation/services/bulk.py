"""Actions on many images at once (the gallery's selection): add to a collection, share into a team,
delete, download as one zip. Every image is looked up through Image.objects.visible_to and every
action asks generation.permissions per image, exactly as the single-image actions do; an image the
user may not act on is counted as refused, never acted on."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import zipstream
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction

from generation import permissions
from generation.models import Collection, Image
from generation.services.collections import collection_add_images
from generation.services.files import files_delete_on_commit
from generation.services.images import image_set_team

ZIP_CHUNK_BYTES = 64 * 1024


class BulkError(ValueError):
    """The selection cannot be acted on as asked; the message is fit to show."""


@dataclass(frozen=True)
class BulkResult:
    done: int
    refused: int


def bulk_parse_ids(values: Iterable[str]) -> list[uuid.UUID]:
    """The selected image ids, in order and without repeats; a malformed id is a BulkError (a 400)."""
    ids: dict[uuid.UUID, None] = {}
    for value in values:
        try:
            ids[uuid.UUID(str(value))] = None
        except ValueError:
            raise BulkError("The selection holds something that is not an image id.") from None
    if not ids:
        raise BulkError("Select at least one image first.")
    if len(ids) > settings.STUDIO_BULK_MAX_IMAGES:
        raise BulkError(f"Select at most {settings.STUDIO_BULK_MAX_IMAGES} images at a time.")
    return list(ids)


def bulk_selected_images(user, ids: list[uuid.UUID]) -> list[Image]:
    """The selected images the user can see, newest first (one query). Ids of images the user
    cannot see (another's, deleted) are simply absent: the caller reports them as refused."""
    images = Image.objects.visible_to(user).filter(pk__in=ids).select_related("job")
    return list(images.order_by("-created_at", "-id"))


@transaction.atomic
def images_add_to_collection(*, user, images: list[Image], collection: Collection) -> BulkResult:
    if not permissions.can_change_collection(user, collection):
        raise BulkError("You cannot add images to this collection.")
    added, refused = collection_add_images(collection=collection, images=images, added_by=user)
    return BulkResult(done=added, refused=refused)


@transaction.atomic
def images_move_to_team(*, user, images: list[Image], team_id) -> BulkResult:
    """Share the selected images into a team gallery: only the user's own images move."""
    if not permissions.may_save_into_team(user, team_id):
        raise BulkError("You cannot add images to this team's gallery.")
    movable = [image for image in images if permissions.can_move_image_to_team(user, image, team_id)]
    for image in movable:
        image_set_team(image=image, team_id=team_id)
    return BulkResult(done=len(movable), refused=len(images) - len(movable))


@transaction.atomic
def images_delete(*, user, images: list[Image]) -> BulkResult:
    """Delete what the user may delete (rows now, files after commit); credits are never refunded."""
    deletable = [image for image in images if permissions.can_delete_image(user, image)]
    files = [name for image in deletable for name in (image.file.name, image.thumbnail.name)]
    Image.objects.filter(pk__in=[image.pk for image in deletable]).delete()
    files_delete_on_commit(files)
    return BulkResult(done=len(deletable), refused=len(images) - len(deletable))


# --- The zip --------------------------------------------------------------------------------------

def zip_entry_name(image: Image) -> str:
    return f"studio-{image.seed}-{str(image.id)[:8]}.png"


def _file_chunks(name: str) -> Iterator[bytes]:
    """A stored file, read a chunk at a time only when the zip reaches it."""
    with default_storage.open(name, "rb") as handle:
        while chunk := handle.read(ZIP_CHUNK_BYTES):
            yield chunk


def images_zip(*, images: list[Image]) -> zipstream.ZipStream:
    """A zip of the original PNGs, streamed: nothing is read until the response iterates it, and then
    one chunk at a time. PNGs are already compressed, so they are stored, which also makes the
    total size known up front (a Content-Length, so the browser shows progress).

    `images` must come from bulk_selected_images (visible_to). A file missing from storage is left
    out rather than breaking the download halfway."""
    if len(images) > settings.STUDIO_ZIP_MAX_IMAGES:
        raise BulkError(f"A zip holds at most {settings.STUDIO_ZIP_MAX_IMAGES} images: select fewer.")
    archive = zipstream.ZipStream(compress_type=zipstream.ZIP_STORED, sized=True)
    names: set[str] = set()
    for image in images:
        try:
            size = default_storage.size(image.file.name)
        except OSError:  # FileNotFoundError included
            continue
        name = zip_entry_name(image)
        if name in names:
            name = f"studio-{image.seed}-{image.id}.png"
        names.add(name)
        archive.add(_file_chunks(image.file.name), name, size=size)
    if archive.is_empty():
        raise BulkError("None of the selected images' files could be found.")
    return archive
