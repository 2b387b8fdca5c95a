"""Collections (boards): the list, a collection's page (the gallery, filtered), create, rename,
delete, and adding or removing one image from the image page. Reads go through
Collection.objects.visible_to (a collection one cannot see is a 404), actions through
generation.permissions (403 on a collection one can see)."""

from __future__ import annotations

import uuid

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from generation import permissions, selectors
from generation.models import Collection, Image
from generation.services.collections import (
    CollectionError,
    collection_add_images,
    collection_create,
    collection_delete,
    collection_remove_images,
    collection_rename,
)
from generation.views import _back_to, _get_image, gallery_response, image_page


def _get_collection(request: HttpRequest, collection_id) -> Collection:
    collection = (
        Collection.objects.visible_to(request.user).select_related("owner_team").filter(pk=collection_id).first()
    )
    if collection is None:
        raise Http404("No such collection.")
    return collection


# --- The list and create --------------------------------------------------------------------------

@login_required
@require_http_methods(["GET", "POST"])
def collection_list(request: HttpRequest) -> HttpResponse:
    """My collections and my teams', with a form to start one (POST creates it)."""
    teams = list(selectors.teams_user_can_save_into(request.user))
    error, status = None, 200
    if request.method == "POST":
        team_id = request.POST.get("team") or None
        if team_id is not None and team_id not in {str(team.pk) for team in teams}:
            error, status = "Choose one of your teams.", 400
        else:
            try:
                collection = collection_create(name=request.POST.get("name", ""), created_by=request.user,
                                               team_id=team_id)
            except CollectionError as exc:
                error, status = str(exc), 400
            else:
                messages.success(request, f"Collection “{collection.name}” created.")
                return redirect("generation:collection_detail", collection_id=collection.pk)
    collections = selectors.collections_for_list(request.user)
    context = {
        "personal": [c for c in collections if c.owner_team_id is None],
        "by_team": _group_by_team(c for c in collections if c.owner_team_id is not None),
        "teams": teams, "error": error, "name": request.POST.get("name", ""),
        "chosen_team": request.POST.get("team", ""),
    }
    return render(request, "generation/collection_list.html", context, status=status)


def _group_by_team(collections) -> list[tuple[object, list[Collection]]]:
    groups: dict = {}
    for collection in collections:
        groups.setdefault(collection.owner_team, []).append(collection)
    return list(groups.items())


# --- One collection -------------------------------------------------------------------------------

@login_required
@require_GET
def collection_detail(request: HttpRequest, collection_id) -> HttpResponse:
    """The gallery, showing this collection's images (with the same search, filters and bulk bar)."""
    collection = _get_collection(request, collection_id)
    return gallery_response(
        request, collection=collection, title=collection.name,
        gallery_url=reverse("generation:collection_detail", args=[collection.pk]),
        extra={
            "collection": collection,
            "can_change_collection": permissions.can_change_collection(request.user, collection),
            "can_delete_collection": permissions.can_delete_collection(request.user, collection),
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def collection_rename_view(request: HttpRequest, collection_id) -> HttpResponse:
    collection = _get_collection(request, collection_id)
    if not permissions.can_change_collection(request.user, collection):
        raise PermissionDenied("Only the collection's owner or the team's members can rename it.")
    error, status = None, 200
    if request.method == "POST":
        try:
            collection_rename(collection=collection, name=request.POST.get("name", ""))
        except CollectionError as exc:
            error, status = str(exc), 400
            collection.name = Collection.objects.values_list("name", flat=True).get(pk=collection.pk)
        else:
            messages.success(request, "Collection renamed.")
            return redirect("generation:collection_detail", collection_id=collection.pk)
    context = {"collection": collection, "error": error, "name": request.POST.get("name", collection.name)}
    return render(request, "generation/collection_rename.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def collection_delete_view(request: HttpRequest, collection_id) -> HttpResponse:
    """GET, or a POST without confirm=yes: the confirmation page. The images are not deleted."""
    collection = _get_collection(request, collection_id)
    if not permissions.can_delete_collection(request.user, collection):
        raise PermissionDenied("Only the collection's owner or a team admin can delete it.")
    if request.method == "GET" or request.POST.get("confirm") != "yes":
        count = collection.items.count()
        return render(request, "generation/collection_confirm_delete.html",
                      {"collection": collection, "image_count": count})
    collection_delete(collection=collection)
    messages.success(request, f"Collection “{collection.name}” deleted. Its images are still in the gallery.")
    return redirect("generation:collection_list")


@login_required
@require_POST
def collection_remove_images_view(request: HttpRequest, collection_id) -> HttpResponse:
    """Take the posted images (`images`) out of the collection; they stay in the gallery."""
    collection = _get_collection(request, collection_id)
    if not permissions.can_change_collection(request.user, collection):
        raise PermissionDenied("Only the collection's owner or the team's members can change it.")
    ids = [value for value in request.POST.getlist("images") if _is_uuid(value)]
    removed = collection_remove_images(collection=collection, image_ids=ids)
    noun = "image" if removed == 1 else "images"
    messages.success(request, f"Removed {removed} {noun} from “{collection.name}”.")
    return redirect(_back_to(request, reverse("generation:collection_detail", args=[collection.pk])))


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


# --- One image's collections (the image page) -----------------------------------------------------

@login_required
@require_POST
def image_collections(request: HttpRequest, image_id) -> HttpResponse:
    """Add the image to a collection (`add`=<id>, or a new one named `new_name`), or take it out of
    one (`remove`=<id>). Answers the panel for htmx, else goes back to the image page."""
    image = _get_image(request, image_id)
    try:
        note = _change_image_collections(request, image)
    except CollectionError as exc:
        return _image_collections_answer(request, image, error=str(exc), status=400)
    return _image_collections_answer(request, image, note=note)


def _change_image_collections(request: HttpRequest, image: Image) -> str:
    if request.POST.get("remove"):
        if not _is_uuid(request.POST["remove"]):
            raise CollectionError("Choose a collection.")
        collection = _get_collection(request, request.POST["remove"])
        if not permissions.can_change_collection(request.user, collection):
            raise PermissionDenied("You cannot change this collection.")
        collection_remove_images(collection=collection, image_ids=[image.pk])
        return f"Removed from “{collection.name}”."
    if request.POST.get("new_name", "").strip():
        team_id = image.team_id if request.POST.get("new_in_team") and image.team_id else None
        collection = collection_create(name=request.POST["new_name"], created_by=request.user,
                                       team_id=team_id)
    else:
        value = request.POST.get("add", "")
        if not _is_uuid(value):
            raise CollectionError("Choose a collection, or name a new one.")
        collection = _get_collection(request, value)
    if not permissions.can_change_collection(request.user, collection):
        raise PermissionDenied("You cannot add images to this collection.")
    added, _ = collection_add_images(collection=collection, images=[image], added_by=request.user)
    if not added:
        raise CollectionError(f"“{collection.name}” only takes its team's images.")
    return f"Added to “{collection.name}”."


def _image_collections_answer(request, image, *, note=None, error=None, status=200) -> HttpResponse:
    """htmx: the panel again. A plain post: back to the image page, or that page with the error
    (a 400) when the change could not be made."""
    panel = {"collections_note": note, "collections_error": error}
    if request.htmx:
        context = {"image": image, **panel, **selectors.image_collections_panel(request.user, image)}
        return render(request, "generation/_image_collections.html", context, status=status)
    if error:
        return image_page(request, image, extra=panel, status=status)
    messages.success(request, note)
    return redirect("generation:image_detail", image_id=image.pk)
