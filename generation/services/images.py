"""Changes to single images: favourite, delete, move into a team gallery and back. Credits are
never touched: a job keeps its charge whatever happens to its images later."""

from __future__ import annotations

from django.db import transaction

from generation import events, permissions
from generation.models import Image
from generation.services.collections import collection_items_leave_other_teams
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


class ImageMoveRefused(PermissionError):
    """The user may not move this image there; the message is fit to show."""


@transaction.atomic
def image_move_to_team(*, image: Image, team_id, user) -> Image:
    """Share an image of one's own into a team gallery (it stays its creator's). Moving it out of
    another team also takes it out of that team's collections."""
    if not permissions.can_move_image_to_team(user, image, team_id):
        raise ImageMoveRefused("You can only move your own images into a team you create in.")
    return image_set_team(image=image, team_id=team_id)


@transaction.atomic
def image_remove_from_team(*, image: Image, user) -> Image:
    """Back to its creator's own gallery only: by the creator, or by an admin of the team."""
    if not permissions.can_remove_image_from_team(user, image):
        raise ImageMoveRefused("Only its creator or a team admin can take an image out of the team gallery.")
    return image_set_team(image=image, team_id=None)


def image_set_team(*, image: Image, team_id) -> Image:
    """The move itself, for callers that already asked generation.permissions (bulk moves)."""
    Image.objects.filter(pk=image.pk).update(team_id=team_id)
    collection_items_leave_other_teams(image_id=image.pk, team_id=team_id)
    image.team_id = team_id
    if team_id is not None:
        events.image_moved_to_team(image=image)  # it joins the open team galleries live
    return image
