"""Changes to single images: favourite, delete. Credits are never touched: a job keeps its
charge whatever happens to its images later."""

from __future__ import annotations

from django.db import transaction

from generation.models import Image
from generation.services.files import files_delete_on_commit


@transaction.atomic
def image_set_favourite(*, image: Image, favourite: bool) -> Image:
    Image.objects.filter(pk=image.pk).update(favourite=favourite)
    image.favourite = favourite
    return image


@transaction.atomic
def image_delete(*, image: Image) -> None:
    """Delete the row now (its URLs answer 404 at once) and its PNG and thumbnail once that is
    committed, so a rolled-back delete never leaves a row without its files."""
    locked = Image.objects.select_for_update().filter(pk=image.pk).first()
    if locked is None:
        return
    files = [locked.file.name, locked.thumbnail.name]
    locked.delete()
    files_delete_on_commit(files)
