"""Collections (boards): named references to images. An image may be in several; deleting a
collection never deletes an image. Callers check generation.permissions first; these functions
re-check what a single call could get wrong (a team collection only takes that team's images)."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import IntegrityError, transaction
from django.utils import timezone

from generation import permissions
from generation.models import Collection, CollectionItem, Image

NAME_MAX_LENGTH = Collection._meta.get_field("name").max_length


class CollectionError(ValueError):
    """A change that cannot be made; the message is fit to show to the user."""


def _clean_name(name: str) -> str:
    name = " ".join((name or "").split())
    if not name:
        raise CollectionError("Give the collection a name.")
    if len(name) > NAME_MAX_LENGTH:
        raise CollectionError(f"A collection name has at most {NAME_MAX_LENGTH} characters.")
    return name


def _name_taken(*, name: str, owner_user_id, owner_team_id, exclude_pk=None) -> bool:
    same_owner = (
        Collection.objects.filter(owner_team_id=owner_team_id) if owner_team_id
        else Collection.objects.filter(owner_user_id=owner_user_id, owner_team__isnull=True)
    )
    return same_owner.filter(name__iexact=name).exclude(pk=exclude_pk).exists()


def _save_with_unique_name(collection: Collection, **save_kwargs) -> Collection:
    """Names are unique per owner (case-insensitive here; the database constraint is the last word
    when two requests race)."""
    if _name_taken(name=collection.name, owner_user_id=collection.owner_user_id,
                   owner_team_id=collection.owner_team_id, exclude_pk=collection.pk):
        raise CollectionError(f"There is already a collection called “{collection.name}”.")
    try:
        with transaction.atomic():
            collection.save(**save_kwargs)
    except IntegrityError:
        raise CollectionError(f"There is already a collection called “{collection.name}”.") from None
    return collection


@transaction.atomic
def collection_create(*, name: str, created_by, team_id=None) -> Collection:
    """A personal collection of `created_by`, or, with `team_id`, one of that team."""
    if team_id is not None and not permissions.can_create_team_collection(created_by, team_id):
        raise CollectionError("Only the team's members can start its collections.")
    collection = Collection(
        name=_clean_name(name), created_by=created_by,
        owner_user=None if team_id else created_by, owner_team_id=team_id,
    )
    return _save_with_unique_name(collection)


@transaction.atomic
def collection_rename(*, collection: Collection, name: str) -> Collection:
    collection.name = _clean_name(name)
    return _save_with_unique_name(collection, update_fields=["name", "updated_at"])


@transaction.atomic
def collection_delete(*, collection: Collection) -> None:
    """The collection and its references go; the images stay where they are."""
    Collection.objects.filter(pk=collection.pk).delete()


@transaction.atomic
def collection_add_images(*, collection: Collection, images: Iterable[Image], added_by) -> tuple[int, int]:
    """Add the images `added_by` may add (can_add_to_collection); images already in it count as
    added. Returns (added, refused)."""
    images = list(images)
    allowed = [image for image in images if permissions.can_add_to_collection(added_by, collection, image)]
    CollectionItem.objects.bulk_create(
        [CollectionItem(collection=collection, image=image, added_by=added_by) for image in allowed],
        ignore_conflicts=True,  # already in it: nothing to do
    )
    if allowed:
        Collection.objects.filter(pk=collection.pk).update(updated_at=timezone.now())
    return len(allowed), len(images) - len(allowed)


@transaction.atomic
def collection_remove_images(*, collection: Collection, image_ids: Iterable) -> int:
    """Take references out of the collection (the images themselves stay). Returns how many."""
    deleted, _ = CollectionItem.objects.filter(collection=collection, image_id__in=list(image_ids)).delete()
    return deleted


def collection_items_leave_other_teams(*, image_id, team_id) -> None:
    """An image that leaves a team gallery leaves that team's collections too (a team collection
    only holds the team's images). Called inside the move's transaction."""
    stale = CollectionItem.objects.filter(image_id=image_id, collection__owner_team__isnull=False)
    if team_id is not None:
        stale = stale.exclude(collection__owner_team_id=team_id)
    stale.delete()
