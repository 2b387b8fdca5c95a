"""Reads for public links. A link shows only what its maker may still share and see: their
visibility, never more. A link that is revoked, hidden by staff or expired, whose maker lost the
right to share the thing (suspended, removed from the team, demoted) or whose image is gone, is
not found (a 404)."""

from __future__ import annotations

import re
import uuid
from datetime import datetime

from django.db.models import Q, QuerySet
from django.utils import timezone

from generation import permissions
from generation.models import Image, Report, ShareLink

SHARE_PAGE_SIZE = 48
# What a token can look like (token_urlsafe's alphabet, at most the column's width): anything else
# (a NUL byte PostgreSQL would refuse, a 10 kB path) is not found without asking the database.
TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _live_links() -> QuerySet[ShareLink]:
    now = timezone.now()
    return ShareLink.objects.filter(revoked_at__isnull=True, hidden_at__isnull=True).filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=now)
    )


def maker_may_still_share(link: ShareLink) -> bool:
    if link.image_id:
        return permissions.can_share_image(link.created_by, link.image)
    return permissions.can_share_collection(link.created_by, link.collection)


def share_link_live(token: str) -> ShareLink:
    """The live link with this token; raises ShareLink.DoesNotExist (a 404) otherwise."""
    if not TOKEN_SHAPE.fullmatch(token):
        raise ShareLink.DoesNotExist
    link = _live_links().select_related("created_by", "image__job", "collection").get(token=token)
    if not maker_may_still_share(link):
        raise ShareLink.DoesNotExist
    return link


def share_link_images_all(link: ShareLink) -> QuerySet[Image]:
    """Every image a live link shows: its image, or the collection's images its maker can see."""
    if link.image_id:
        return Image.objects.filter(pk=link.image_id).select_related("job")
    return (Image.objects.visible_to(link.created_by)
            .filter(collection_items__collection_id=link.collection_id).select_related("job"))


def share_link_images(link: ShareLink, *, after: tuple[datetime, uuid.UUID] | None = None,
                      limit: int = SHARE_PAGE_SIZE) -> tuple[list[Image], tuple[datetime, uuid.UUID] | None]:
    """One page of a link's images, newest first, and the keyset position of the next (or None)."""
    images = share_link_images_all(link)
    if after:
        at, image_id = after
        images = images.filter(Q(created_at__lt=at) | Q(created_at=at, id__lt=image_id))
    page = list(images.order_by("-created_at", "-id")[: limit + 1])
    if len(page) <= limit:
        return page, None
    page = page[:limit]
    return page, (page[-1].created_at, page[-1].id)


def share_link_image(link: ShareLink, image_id) -> Image:
    """One image of a live link; raises Image.DoesNotExist if the link does not show it."""
    return share_link_images_all(link).get(pk=image_id)


def share_links_of_image(user, image: Image) -> list[ShareLink]:
    """The links to an image that `user` may revoke and that are not revoked yet, newest first."""
    links = (ShareLink.objects.filter(image=image, revoked_at__isnull=True)
             .select_related("image", "created_by"))
    return [link for link in links if permissions.can_revoke_share_link(user, link)]


def share_links_of_collection(user, collection) -> list[ShareLink]:
    links = (ShareLink.objects.filter(collection=collection, revoked_at__isnull=True)
             .select_related("collection", "created_by"))
    return [link for link in links if permissions.can_revoke_share_link(user, link)]


def share_link_state(link: ShareLink) -> str:
    """In words, for the maker's list and the staff queue."""
    if link.revoked_at:
        return "revoked"
    if link.hidden_at:
        return "hidden by staff"
    if link.expires_at and link.expires_at <= timezone.now():
        return "expired"
    return "live"


# --- Moderation -------------------------------------------------------------------------------------

def reports_open() -> QuerySet[Report]:
    """Reports nobody has acted on yet, oldest first (a queue), with what they point at."""
    return (Report.objects.filter(resolved_at__isnull=True)
            .select_related("share_link__image__job", "share_link__collection", "link_owner", "reporter")
            .order_by("created_at", "pk"))


def reports_open_count() -> int:
    return Report.objects.filter(resolved_at__isnull=True).count()


def report_images_for_staff(report: Report) -> QuerySet[Image]:
    """What was shared through the reported link, whatever the link's state (staff see hidden and
    revoked links' content): the image, or every image in the collection."""
    link = report.share_link
    if link is None:
        return Image.objects.none()
    if link.image_id:
        return Image.objects.filter(pk=link.image_id).select_related("job", "owner")
    return (Image.objects.filter(collection_items__collection_id=link.collection_id)
            .select_related("job", "owner").order_by("-created_at", "-id"))


def reports_all() -> QuerySet[Report]:
    return Report.objects.select_related(
        "share_link__image__job", "share_link__collection", "share_link__created_by", "link_owner", "reporter"
    )
