"""Read-only questions about accounts that other apps ask."""

from __future__ import annotations

import hashlib
import hmac

from django.db.models import Case, Count, OuterRef, Q, Subquery, Value, When

from accounts.models import API_KEY_PREFIX_LENGTH, ROLE_RANK, ApiKey, Invitation, Membership, Signup, Team, TeamRole


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


# --- API keys ------------------------------------------------------------------------------------

API_TOKEN_PREFIX = "sk_live_"
API_TOKEN_MAX_LENGTH = 200  # a real token has 60 characters; anything much longer is not one


def api_token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def api_key_authenticate(token: str) -> ApiKey | None:
    """The active key this token belongs to, or None (unknown, malformed, revoked, or its owner's
    account deactivated). One indexed lookup by prefix, then a constant-time hash comparison."""
    if not isinstance(token, str) or len(token) > API_TOKEN_MAX_LENGTH or not token.startswith(API_TOKEN_PREFIX):
        return None
    prefix = token[:API_KEY_PREFIX_LENGTH]
    key = ApiKey.objects.select_related("owner_user", "owner_team").filter(prefix=prefix).first()
    if key is None:
        api_token_hash(token)  # about the same work either way
        return None
    if not hmac.compare_digest(key.secret_hash, api_token_hash(token)):
        return None
    if key.revoked_at is not None:
        return None
    if key.owner_user_id is not None and not key.owner_user.is_active:
        return None
    return key


def api_keys_of_user(*, user):
    """The user's own keys (not their teams'), newest first, revoked ones included."""
    return ApiKey.objects.filter(owner_user_id=user.pk, owner_team__isnull=True).order_by("-created_at", "-id")


def api_keys_of_team(*, team_id):
    return ApiKey.objects.filter(owner_team_id=team_id).select_related("created_by").order_by("-created_at", "-id")


def api_key_manageable_by(*, user, key_id) -> ApiKey | None:
    """The key if this user may see its usage and revoke it (their own key, or a key of a team they
    administer); None otherwise, so views answer 404."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return None
    admin_teams = team_ids_of(user, min_role=TeamRole.ADMIN)
    return (
        ApiKey.objects.select_related("owner_team")
        .filter(Q(owner_user_id=user.pk) | Q(owner_team_id__in=admin_teams), pk=key_id)
        .first()
    )
