"""Who may do what to images, collections, jobs and public links: one function per action.

Reads are decided by the `visible_to` querysets on the models (a forbidden read is a 404);
these functions decide the actions on an object the user can already see. Views, consumers,
downloads, zips and services all ask here; templates only show what the view computed.
Team roles come from accounts.permissions (viewer < member < admin < owner).
"""

from __future__ import annotations

from accounts import permissions as team
from accounts.models import TeamRole
from accounts.permissions import role_of
from accounts.selectors import team_ids_of


def _is(user, user_id) -> bool:
    return bool(getattr(user, "is_authenticated", False) and user.is_active and user.pk == user_id)


def _team_allows(user, team_id, check) -> bool:
    return team_id is not None and check(role_of(user=user, team_id=team_id))


# --- Teams ---------------------------------------------------------------------------------------

def can_view_team(user, team_id) -> bool:
    return _team_allows(user, team_id, team.can_view_team)


def may_save_into_team(user, team_id) -> bool:
    """Generate into the team gallery, or share an image of one's own into it."""
    return _team_allows(user, team_id, team.can_contribute)


def teams_user_may_save_into(user):
    """The ids (a subquery) of the teams where may_save_into_team holds, for lists and menus:
    members and up, the same rank as accounts.permissions.can_contribute."""
    return team_ids_of(user, min_role=TeamRole.MEMBER)


def can_bill_team(user, team_id) -> bool:
    return _team_allows(user, team_id, team.can_contribute)


# --- Images --------------------------------------------------------------------------------------

def can_change_image(user, image) -> bool:
    """Favourite it, add it to one's collections, reuse it: its owner."""
    return _is(user, image.owner_id)


def can_delete_image(user, image) -> bool:
    """Its owner; in a team gallery also the team's admins ("admins remove anything")."""
    return _is(user, image.owner_id) or _team_allows(user, image.team_id, team.can_moderate)


def can_move_image_to_team(user, image, team_id) -> bool:
    return _is(user, image.owner_id) and may_save_into_team(user, team_id)


def can_remove_image_from_team(user, image) -> bool:
    """Back to its owner's own gallery: the owner, or a team admin."""
    return image.team_id is not None and (
        _is(user, image.owner_id) or _team_allows(user, image.team_id, team.can_moderate)
    )


def can_share_image(user, image) -> bool:
    """Make a public link: the owner; a team admin for a team image."""
    return _is(user, image.owner_id) or _team_allows(user, image.team_id, team.can_moderate)


# --- Collections ---------------------------------------------------------------------------------

def can_change_collection(user, collection) -> bool:
    """Rename it, add and remove images: its owner; a team's members (not viewers)."""
    return _is(user, collection.owner_user_id) or _team_allows(user, collection.owner_team_id, team.can_contribute)


def can_create_team_collection(user, team_id) -> bool:
    """Start a collection in a team: its members (not viewers), who may also change it."""
    return _team_allows(user, team_id, team.can_contribute)


def can_delete_collection(user, collection) -> bool:
    return _is(user, collection.owner_user_id) or _team_allows(user, collection.owner_team_id, team.can_moderate)


def can_add_to_collection(user, collection, image) -> bool:
    """A personal collection takes any image its owner can see; a team's, only that team's images."""
    if not can_change_collection(user, collection):
        return False
    if collection.owner_team_id is not None:
        return image.team_id == collection.owner_team_id
    return _is(user, image.owner_id) or can_view_team(user, image.team_id)


def can_share_collection(user, collection) -> bool:
    return _is(user, collection.owner_user_id) or _team_allows(user, collection.owner_team_id, team.can_moderate)


# --- Jobs ----------------------------------------------------------------------------------------

def can_cancel_job(user, job) -> bool:
    return _is(user, job.user_id) or _team_allows(user, job.team_id, team.can_moderate)


# --- Public links --------------------------------------------------------------------------------

def can_revoke_share_link(user, link) -> bool:
    """Whoever made it; for a team's image or collection also the team's admins."""
    target_team = link.image.team_id if link.image_id else link.collection.owner_team_id
    return _is(user, link.created_by_id) or _team_allows(user, target_team, team.can_moderate)


# --- Moderation ----------------------------------------------------------------------------------

def can_moderate_reports(user) -> bool:
    """See the report queue and act on reports (hide links, delete images, suspend accounts): staff."""
    return bool(getattr(user, "is_authenticated", False) and user.is_active and user.is_staff)


# --- Fine-tuning and LoRAs (docs/fine-tuning.md) ------------------------------------------------

FULL_FINETUNE_PERMISSION = "generation.train_full_model"


def can_start_training(user) -> bool:
    """Any active signed-in user trains on their own wallet."""
    return bool(getattr(user, "is_authenticated", False) and user.is_active)


def can_full_finetune(user) -> bool:
    """A full fine-tune (a private model variant, gigabytes on a real model): only users an admin
    gave the permission (staff included only if given it too)."""
    return can_start_training(user) and user.has_perm(FULL_FINETUNE_PERMISSION)


def can_use_lora(user, lora) -> bool:
    """Apply it on Create: its owner; members (not viewers) of the team it is shared with."""
    return _is(user, lora.owner_id) or _team_allows(user, lora.team_id, team.can_contribute)


def can_download_lora(user, lora) -> bool:
    """Its owner; the team's members only where the owner allowed downloads."""
    return _is(user, lora.owner_id) or (lora.team_may_download and _team_allows(user, lora.team_id, team.can_contribute))


def can_change_lora(user, lora) -> bool:
    """Rename, describe, share with a team or stop sharing, delete: its owner."""
    return _is(user, lora.owner_id)


def can_remove_lora_from_team(user, lora) -> bool:
    """Stop sharing it with the team: its owner, or the team's admins."""
    return lora.team_id is not None and (_is(user, lora.owner_id) or _team_allows(user, lora.team_id, team.can_moderate))


def can_share_lora_with_team(user, lora, team_id) -> bool:
    return _is(user, lora.owner_id) and may_save_into_team(user, team_id)
