"""Teams, memberships, roles and invitations.

Every change to a team's people locks the team row first (SELECT ... FOR UPDATE), so two admins
acting at once are serialised and the rules below are checked against what the database holds
now, not what a page showed a moment ago. That is how a team keeps exactly one owner: the
partial unique index allows at most one, and only `team_transfer_ownership` moves it, demoting
the old owner before promoting the new one inside the same lock.

Invitation links carry a random token (256 bits); only its SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from datetime import timedelta

from allauth.account.adapter import get_adapter
from allauth.account.models import EmailAddress
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts import permissions
from accounts.models import ROLE_RANK, Invitation, Membership, Team, TeamRole
from accounts.services.api_keys import api_keys_revoke_made_for_team

INVITATION_MAIL = "teams/email/invitation"  # templates/teams/email/invitation_{subject,message}.txt


class TeamRuleBroken(Exception):
    """The change is not allowed (by the actor's role or a team rule); the message says why."""


class InvitationError(Exception):
    """An invitation link that cannot be used now. `reason` is one of: expired, used, revoked,
    unverified, wrong_account; the message is fit to show."""

    def __init__(self, message: str, *, reason: str):
        super().__init__(message)
        self.reason = reason


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _lock_team(team_id) -> Team:
    return Team.objects.select_for_update().get(pk=team_id)


def _role_now(team_id, user) -> str | None:
    return Membership.objects.filter(team_id=team_id, user_id=user.pk).values_list("role", flat=True).first()


def _locked_membership(team_id, user_id) -> Membership:
    membership = Membership.objects.select_for_update().filter(team_id=team_id, user_id=user_id).first()
    if membership is None:
        raise TeamRuleBroken("That person is not a member of this team.")
    return membership


def _clean_name(name: str) -> str:
    name = " ".join(name.split())
    if not name:
        raise TeamRuleBroken("A team needs a name.")
    if len(name) > Team._meta.get_field("name").max_length:
        raise TeamRuleBroken("That name is too long (at most 100 characters).")
    return name


# --- Teams ---------------------------------------------------------------------------------------


@transaction.atomic
def team_create(*, user, name: str) -> Team:
    """A new team with `user` as its owner (its wallet is made by generation.services.teams)."""
    team = Team.objects.create(name=_clean_name(name), created_by=user)
    Membership.objects.create(team=team, user=user, role=TeamRole.OWNER)
    return team


@transaction.atomic
def team_rename(*, team: Team, actor, name: str) -> Team:
    locked = _lock_team(team.pk)
    if not permissions.can_change_team_settings(_role_now(team.pk, actor)):
        raise TeamRuleBroken("Only the team's owner and admins can rename it.")
    locked.name = _clean_name(name)
    locked.save(update_fields=["name"])
    return locked


# --- Roles and members ---------------------------------------------------------------------------


@transaction.atomic
def membership_change_role(*, team: Team, actor, user_id, role: str) -> tuple[Membership, str]:
    """Give a member another role (never owner: that is a transfer). Returns the membership and
    the role it had before."""
    _lock_team(team.pk)
    if role not in TeamRole.values:
        raise TeamRuleBroken("Unknown role.")
    target = _locked_membership(team.pk, user_id)
    if not permissions.can_change_role(_role_now(team.pk, actor), target.role, role):
        raise TeamRuleBroken("You cannot give that member that role.")
    previous = target.role
    if previous != role:
        target.role = role
        target.save(update_fields=["role"])
        if not permissions.can_manage_api_keys(role):
            api_keys_revoke_made_for_team(team_id=team.pk, user_id=target.user_id)
    return target, previous


@transaction.atomic
def membership_remove(*, team: Team, actor, user_id) -> Membership:
    """Take a member out of the team (an admin or the owner; never the owner themself)."""
    _lock_team(team.pk)
    target = _locked_membership(team.pk, user_id)
    if not permissions.can_remove_member(_role_now(team.pk, actor), target.role):
        if target.role == TeamRole.OWNER:
            raise TeamRuleBroken("The owner cannot be removed; they can transfer ownership first.")
        raise TeamRuleBroken("You cannot remove that member.")
    target.delete()
    api_keys_revoke_made_for_team(team_id=team.pk, user_id=target.user_id)
    return target


@transaction.atomic
def membership_leave(*, team: Team, user) -> Membership:
    _lock_team(team.pk)
    membership = _locked_membership(team.pk, user.pk)
    if membership.role == TeamRole.OWNER:
        raise TeamRuleBroken("You own this team: transfer ownership to another member before you leave.")
    membership.delete()
    api_keys_revoke_made_for_team(team_id=team.pk, user_id=user.pk)
    return membership


@transaction.atomic
def team_transfer_ownership(*, team: Team, actor, user_id) -> Membership:
    """Make another member the owner; the old owner stays on as an admin."""
    _lock_team(team.pk)
    current = _locked_membership(team.pk, actor.pk)
    if not permissions.can_transfer_ownership(current.role):
        raise TeamRuleBroken("Only the owner can transfer ownership.")
    if user_id == actor.pk:
        raise TeamRuleBroken("You already own this team.")
    new_owner = _locked_membership(team.pk, user_id)
    # Demote first: the partial unique index allows one owner at a time, even inside a transaction.
    current.role = TeamRole.ADMIN
    current.save(update_fields=["role"])
    new_owner.role = TeamRole.OWNER
    new_owner.save(update_fields=["role"])
    return new_owner


# --- Invitations ---------------------------------------------------------------------------------


def invitation_is_pending(invitation: Invitation) -> bool:
    return (
        invitation.accepted_at is None
        and invitation.revoked_at is None
        and invitation.expires_at > timezone.now()
    )


def _send_invitation(invitation: Invitation, *, token: str, link_for: Callable[[str], str]) -> None:
    context = {
        "team_name": invitation.team.name,
        "role": invitation.get_role_display(),
        "link": link_for(token),
        "invited_by": invitation.invited_by.email if invitation.invited_by else "",
        "expires_at": invitation.expires_at,
    }
    email = invitation.email
    transaction.on_commit(lambda: get_adapter().send_mail(INVITATION_MAIL, email, context))


def _new_token(invitation: Invitation) -> str:
    token = secrets.token_urlsafe(32)
    invitation.token_hash = _hash(token)
    invitation.expires_at = timezone.now() + timedelta(days=settings.STUDIO_TEAM_INVITATION_DAYS)
    return token


def _check_invitations_per_day(team: Team) -> None:
    """Invitations send mail to any address: a team may start STUDIO_TEAM_INVITATIONS_PER_DAY a
    day (0: no limit), so an account cannot turn the studio into a mailer."""
    limit = settings.STUDIO_TEAM_INVITATIONS_PER_DAY
    since = timezone.now() - timedelta(days=1)
    if limit and Invitation.objects.filter(team=team, created_at__gte=since).count() >= limit:
        raise TeamRuleBroken(
            f"This team sent {limit} invitations in the last day; please try again tomorrow."
        )


@transaction.atomic
def invitation_create(
    *, team: Team, actor, email: str, role: str, link_for: Callable[[str], str]
) -> Invitation:
    """Invite an address into the team with a role (at most the inviter's own). Mails the link
    (`link_for(token)` makes it absolute) after commit; a pending invitation of the same address
    to this team is withdrawn, so only the newest link works."""
    _lock_team(team.pk)
    actor_role = _role_now(team.pk, actor)
    if not permissions.can_manage_members(actor_role):
        raise TeamRuleBroken("Only the team's owner and admins can invite people.")
    if role not in TeamRole.values or role == TeamRole.OWNER or ROLE_RANK[role] > ROLE_RANK[actor_role]:
        raise TeamRuleBroken("You cannot invite someone with that role.")
    _check_invitations_per_day(team)
    email = email.strip()
    members = Membership.objects.filter(team=team)
    if members.filter(Q(user__email__iexact=email) | Q(user__emailaddress__email__iexact=email)).exists():
        raise TeamRuleBroken(f"{email} is already a member of this team.")
    now = timezone.now()
    Invitation.objects.filter(
        team=team, email__iexact=email, accepted_at__isnull=True, revoked_at__isnull=True
    ).update(revoked_at=now)
    invitation = Invitation(team=team, email=email, role=role, invited_by=actor)
    token = _new_token(invitation)
    invitation.save()
    _send_invitation(invitation, token=token, link_for=link_for)
    return invitation


@transaction.atomic
def invitation_revoke(*, invitation: Invitation, actor) -> Invitation:
    _lock_team(invitation.team_id)
    if not permissions.can_manage_members(_role_now(invitation.team_id, actor)):
        raise TeamRuleBroken("Only the team's owner and admins can withdraw invitations.")
    locked = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if locked.accepted_at is not None:
        raise TeamRuleBroken("That invitation was already accepted.")
    if locked.revoked_at is None:
        locked.revoked_at = timezone.now()
        locked.save(update_fields=["revoked_at"])
    return locked


@transaction.atomic
def invitation_resend(*, invitation: Invitation, actor, link_for: Callable[[str], str]) -> Invitation:
    """Mail a fresh link with a fresh expiry; the old link stops working (its hash is replaced)."""
    _lock_team(invitation.team_id)
    if not permissions.can_manage_members(_role_now(invitation.team_id, actor)):
        raise TeamRuleBroken("Only the team's owner and admins can resend invitations.")
    invitations = Invitation.objects.select_for_update(of=("self",))  # not the nullable inviter's row
    locked = invitations.select_related("team", "invited_by").get(pk=invitation.pk)
    if locked.accepted_at is not None or locked.revoked_at is not None:
        raise TeamRuleBroken("Only a pending invitation can be sent again.")
    token = _new_token(locked)
    locked.save(update_fields=["token_hash", "expires_at"])
    _send_invitation(locked, token=token, link_for=link_for)
    return locked


def invitation_find(*, token: str) -> Invitation | None:
    """The invitation a link's token belongs to, whatever its state (None: no such link)."""
    if not token or len(token) > 100:
        return None
    return Invitation.objects.select_related("team", "invited_by").filter(token_hash=_hash(token)).first()


def invitation_check_usable(*, invitation: Invitation, user) -> None:
    """Raise InvitationError if `user` cannot accept this invitation now (the page says why)."""
    if invitation.revoked_at is not None:
        raise InvitationError(
            "This invitation was withdrawn by the team. Ask them for a new one.", reason="revoked"
        )
    if invitation.accepted_at is not None:
        raise InvitationError("This invitation has already been used.", reason="used")
    if invitation.expires_at <= timezone.now():
        raise InvitationError(
            f"This invitation expired on {timezone.localtime(invitation.expires_at):%d %b %Y, %H:%M}. "
            "Ask the team for a new one.",
            reason="expired",
        )
    addresses = EmailAddress.objects.filter(user_id=user.pk, email__iexact=invitation.email)
    if not addresses.filter(verified=True).exists():
        if addresses.exists():
            raise InvitationError(
                f"Verify your address {invitation.email} first (see the mail we sent), "
                "then open this link again.",
                reason="unverified",
            )
        raise InvitationError(
            f"This invitation is for {invitation.email}, but you are signed in as {user.email}. "
            "Sign in with that address (or add and verify it on your account), then open this link again.",
            reason="wrong_account",
        )


@transaction.atomic
def invitation_accept(*, invitation: Invitation, user) -> Membership:
    """Join the team with the invited role. Needs an account holding the invited address,
    verified (case-insensitive). Single use: the invitation is marked accepted. Someone who is
    already a member keeps their role."""
    _lock_team(invitation.team_id)
    locked = Invitation.objects.select_for_update().get(pk=invitation.pk)
    invitation_check_usable(invitation=locked, user=user)
    membership, _ = Membership.objects.get_or_create(
        team_id=locked.team_id, user_id=user.pk, defaults={"role": locked.role}
    )
    locked.accepted_at, locked.accepted_by = timezone.now(), user
    locked.save(update_fields=["accepted_at", "accepted_by"])
    return membership
