"""Read-only questions about accounts that other apps ask."""

from __future__ import annotations

from django.db.models import Case, Count, OuterRef, Subquery, Value, When

from accounts.models import ROLE_RANK, Invitation, Membership, Signup, Team, TeamRole


def free_credits_due(*, user) -> bool:
    """Whether the sign-up grant is due to this user: False for a sign-up beyond the per-address
    daily allowance or of a mailbox that already has an account; True for accounts made without
    the sign-up form (admin, createsuperuser)."""
    signup = Signup.objects.filter(user=user).only("free_credits_due").first()
    return signup is None or signup.free_credits_due


# --- Teams ---------------------------------------------------------------------------------------

def team_role(*, user, team_id) -> str | None:
    """The user's role in the team, or None for a non-member (and for anonymous users)."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return None
    return Membership.objects.filter(team_id=team_id, user=user).values_list("role", flat=True).first()


def team_ids_of(user, *, min_role: str = TeamRole.VIEWER):
    """A subquery of the teams where the user has at least `min_role`: querysets filter on it
    (`team_id__in=team_ids_of(user)`), so "which teams" and "which rows" are one SQL query."""
    roles = [role for role, rank in ROLE_RANK.items() if rank >= ROLE_RANK[min_role]]
    return Membership.objects.filter(user_id=user.pk, role__in=roles).values("team_id")


def teams_of(user):
    """The user's teams, each annotated with `my_role`, by name."""
    if not user.is_authenticated:
        return Team.objects.none()
    role = Membership.objects.filter(team=OuterRef("pk"), user_id=user.pk).values("role")[:1]
    return Team.objects.filter(memberships__user_id=user.pk).annotate(my_role=Subquery(role)).order_by("name")


def team_members(*, team_id):
    """Memberships of a team with their users, owner first, then by rank and join date."""
    rank = Case(*[When(role=role, then=Value(-value)) for role, value in ROLE_RANK.items()])
    return Membership.objects.filter(team_id=team_id).select_related("user").order_by(rank, "joined_at")


def team_list_for(user):
    """The user's teams with `my_role` and `member_count`, by name."""
    count = (
        Membership.objects.filter(team=OuterRef("pk")).order_by().values("team")
        .annotate(n=Count("pk")).values("n")[:1]
    )
    return teams_of(user).annotate(member_count=Subquery(count))


def team_pending_invitations(*, team_id):
    """Invitations not yet accepted or withdrawn (expired ones too: they can be sent again)."""
    return Invitation.objects.filter(team_id=team_id, accepted_at__isnull=True, revoked_at__isnull=True).order_by(
        "-created_at"
    )
