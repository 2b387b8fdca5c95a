"""What a team role allows, in one place. Every view, consumer, download and service asks these
(through generation.permissions for images, collections and jobs); templates only show what the
view computed. Each function takes a role (or None for a non-member) so callers that already
know the role need no query; `role_of` fetches it."""

from __future__ import annotations

from accounts.models import ROLE_RANK, TeamRole
from accounts.selectors import team_role as role_of  # noqa: F401 (re-exported: the one way to ask)


def _at_least(role: str | None, minimum: str) -> bool:
    return role is not None and ROLE_RANK[role] >= ROLE_RANK[minimum]


def can_view_team(role: str | None) -> bool:
    """See the team gallery, its collections and its members."""
    return _at_least(role, TeamRole.VIEWER)


def can_contribute(role: str | None) -> bool:
    """Generate into the team gallery, share images into it, bill jobs to the team wallet,
    manage the team's collections."""
    return _at_least(role, TeamRole.MEMBER)


def can_moderate(role: str | None) -> bool:
    """Remove anything from the team gallery, its collections and public links of team images."""
    return _at_least(role, TeamRole.ADMIN)


def can_manage_members(role: str | None) -> bool:
    """Invite people, change roles below owner, remove members."""
    return _at_least(role, TeamRole.ADMIN)


def can_manage_wallet(role: str | None) -> bool:
    """Top up the team wallet, set per-member caps, see every member's usage."""
    return _at_least(role, TeamRole.ADMIN)


def can_transfer_ownership(role: str | None) -> bool:
    return role == TeamRole.OWNER


def can_change_role(actor_role: str | None, target_role: str, new_role: str) -> bool:
    """Admins and the owner change roles, but never the owner's and never to owner (that is a
    transfer); an admin cannot raise anyone above their own rank."""
    if not can_manage_members(actor_role) or TeamRole.OWNER in (target_role, new_role):
        return False
    return ROLE_RANK[new_role] <= ROLE_RANK[actor_role] and ROLE_RANK[target_role] <= ROLE_RANK[actor_role]


def can_remove_member(actor_role: str | None, target_role: str) -> bool:
    """The owner cannot be removed (ownership moves first); admins remove admins and below."""
    if target_role == TeamRole.OWNER:
        return False
    return can_manage_members(actor_role) and ROLE_RANK[target_role] <= ROLE_RANK[actor_role]


def can_change_team_settings(role: str | None) -> bool:
    """Rename the team."""
    return _at_least(role, TeamRole.ADMIN)


def can_manage_api_keys(role: str | None) -> bool:
    """Create and revoke the team's API keys and see their usage (a team key spends the team wallet)."""
    return _at_least(role, TeamRole.ADMIN)
