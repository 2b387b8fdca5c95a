"""Actions on images as a selection: the gallery's bulk bar (add to a collection, share into a
team, zip download, delete after a confirmation page), and moving one image into a team gallery
and back from the image page. Plain form posts that work without JavaScript; the selection is the
checked `images` boxes. Every image goes through Image.objects.visible_to and a permission
function per image (generation.services.bulk)."""

from __future__ import annotations

import uuid

from asgiref.sync import sync_to_async
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from generation import selectors
from generation.models import Collection, Image
from generation.services.bulk import (
    BulkError,
    BulkResult,
    bulk_parse_ids,
    bulk_selected_images,
    images_add_to_collection,
    images_delete,
    images_move_to_team,
    images_zip,
)
from generation.services.collections import CollectionError, collection_create
from generation.services.images import ImageMoveRefused, image_move_to_team, image_remove_from_team
from generation.views import _back_to, _get_image, image_page

ACTIONS = {"collection", "team", "zip", "delete"}


def _problem(request: HttpRequest, message: str, *, status: int = 400) -> HttpResponse:
    back = _back_to(request, reverse("generation:gallery"))
    return render(request, "generation/_bulk_problem.html", {"message": message, "back": back}, status=status)


def _done(request: HttpRequest, verb: str, result: BulkResult) -> HttpResponse:
    noun = "image" if result.done == 1 else "images"
    note = verb.format(count=result.done, noun=noun)
    if result.refused:
        note += f" {result.refused} could not be: they are not yours to change there."
        messages.warning(request, note)
    else:
        messages.success(request, note)
    return redirect(_back_to(request, reverse("generation:gallery")))


@login_required
@require_POST
def bulk_action(request: HttpRequest) -> HttpResponse:
    action = request.POST.get("action", "")
    if action not in ACTIONS:
        return _problem(request, "Choose what to do with the selected images.")
    try:
        ids = bulk_parse_ids(request.POST.getlist("images"))
        images = bulk_selected_images(request.user, ids)
        if not images:
            return _problem(request, "None of the selected images exist any more.", status=404)
        return {"collection": _to_collection, "team": _to_team, "zip": _zip, "delete": _delete}[action](
            request, images
        )
    except (BulkError, CollectionError) as exc:
        return _problem(request, str(exc))


def _to_collection(request: HttpRequest, images) -> HttpResponse:
    new_name = request.POST.get("new_collection", "").strip()
    if new_name:
        collection = collection_create(name=new_name, created_by=request.user)
    else:
        collection = (
            Collection.objects.visible_to(request.user).filter(pk=_uuid_or_none(request.POST.get("collection")))
            .select_related("owner_team").first()
        )
        if collection is None:
            raise BulkError("Choose a collection, or name a new one.")
    result = images_add_to_collection(user=request.user, images=images, collection=collection)
    return _done(request, f"Added {{count}} {{noun}} to “{collection.name}”.", result)


def _to_team(request: HttpRequest, images) -> HttpResponse:
    team = _chosen_team(request)
    if team is None:
        raise BulkError("Choose one of your teams.")
    result = images_move_to_team(user=request.user, images=images, team_id=team.pk)
    return _done(request, f"Shared {{count}} {{noun}} into {team.name}'s gallery.", result)


def _delete(request: HttpRequest, images) -> HttpResponse:
    """Without confirm=yes: the confirmation page, which posts the same selection again."""
    if request.POST.get("confirm") != "yes":
        back = _back_to(request, reverse("generation:gallery"))
        return render(request, "generation/_bulk_confirm_delete.html", {"images": images, "next": back})
    result = images_delete(user=request.user, images=images)
    return _done(request, "Deleted {count} {noun}.", result)


def _zip(request: HttpRequest, images) -> HttpResponse:
    archive = images_zip(images=images)
    name = f"studio-{timezone.now():%Y%m%d-%H%M%S}-{len(images)}-images.zip"
    response = StreamingHttpResponse(_stream(request, archive), content_type="application/zip")
    response["Content-Length"] = str(len(archive))
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    response["Cache-Control"] = "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response


def _stream(request: HttpRequest, archive):
    """Under ASGI (daphne) Django would read a sync iterator into one list before sending it: hand
    it an async one that pulls the zip a chunk at a time from a worker thread instead."""
    if isinstance(request, ASGIRequest):
        return _chunks_async(iter(archive))
    return archive


async def _chunks_async(chunks):
    end = object()
    while (chunk := await sync_to_async(next, thread_sensitive=False)(chunks, end)) is not end:
        yield chunk


def _chosen_team(request: HttpRequest):
    """The posted `team`, if the user may save into it (may_save_into_team); else None."""
    teams = selectors.teams_user_can_save_into(request.user)
    return teams.filter(pk=_uuid_or_none(request.POST.get("team"))).first()


def _uuid_or_none(value):
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


# --- One image into a team gallery and back (the image page) ---------------------------------------

@login_required
@require_POST
def image_team(request: HttpRequest, image_id) -> HttpResponse:
    """`team`=<id> shares the image into that team's gallery; `remove`=1 takes it back to its
    creator's own gallery."""
    image = _get_image(request, image_id)
    try:
        if request.POST.get("remove"):
            image_remove_from_team(image=image, user=request.user)
            note = "Back in its creator's own gallery only."
        else:
            team = _chosen_team(request)
            if team is None:
                extra = {"team_error": "Choose one of your teams."}
                return image_page(request, image, extra=extra, status=400)
            image_move_to_team(image=image, team_id=team.pk, user=request.user)
            note = f"Moved to {team.name}'s gallery."
    except ImageMoveRefused as exc:
        return image_page(request, image, extra={"team_error": str(exc)}, status=403)
    messages.success(request, note)
    if not Image.objects.visible_to(request.user).filter(pk=image.pk).exists():
        return redirect("generation:gallery")  # an admin took someone's image out: no longer theirs to see
    return redirect("generation:image_detail", image_id=image.pk)

