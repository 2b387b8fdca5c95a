"""Public links to one image or one collection: made and revoked here, by whoever may share the
thing (generation.permissions). The token is the only key: 256 random bits, URL-safe."""

from __future__ import annotations

import secrets
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from generation import permissions
from generation.models import Collection, Image, ShareLink

TOKEN_BYTES = 32  # 256 bits, 43 URL-safe characters (at least 128 bits are required)


class ShareNotAllowed(Exception):
    """The user may see the thing but not share it, or may not revoke this link (a 403)."""


class ShareLinkInvalid(ValueError):
    """A request that makes no link (no target, two targets, an expiry in the past): a 400."""


def new_share_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


@transaction.atomic
def share_link_create(
    *, user, image: Image | None = None, collection: Collection | None = None,
    show_parameters: bool = False, expires_at: datetime | None = None,
) -> ShareLink:
    """A new public link made by `user`; it lives until revoked, hidden by staff or expired."""
    if (image is None) == (collection is None):
        raise ShareLinkInvalid("A link points to exactly one image or one collection.")
    if expires_at is not None and expires_at <= timezone.now():
        raise ShareLinkInvalid("The expiry must be in the future.")
    allowed = (permissions.can_share_image(user, image) if image is not None
               else permissions.can_share_collection(user, collection))
    if not allowed:
        raise ShareNotAllowed("Only the owner (or a team admin, for a team's work) can share this.")
    return ShareLink.objects.create(
        token=new_share_token(), image=image, collection=collection, created_by=user,
        show_parameters=show_parameters, expires_at=expires_at,
    )


@transaction.atomic
def share_link_revoke(*, user, link: ShareLink) -> ShareLink:
    """Revoke a link at once (its page and files answer 404). Revoking twice changes nothing."""
    if not permissions.can_revoke_share_link(user, link):
        raise ShareNotAllowed("Only whoever made this link (or a team admin) can revoke it.")
    ShareLink.objects.filter(pk=link.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    link.refresh_from_db(fields=["revoked_at"])
    return link


@transaction.atomic
def share_links_revoke_all_of(*, user) -> int:
    """Revoke every live link a user made (an account suspended by staff); returns how many."""
    live = ShareLink.objects.filter(created_by=user, revoked_at__isnull=True)
    return live.update(revoked_at=timezone.now())
