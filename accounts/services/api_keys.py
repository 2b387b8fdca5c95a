"""API keys: create (the plaintext token is returned once, never stored), revoke, mark used.

A token reads `sk_live_1a2b3c4d_<43 characters>`. Its first 16 characters are the key's prefix,
stored in the clear, unique and indexed: the lookup finds the row by prefix, then compares the
SHA-256 of the whole token with the stored one in constant time (accounts.selectors.api_key_authenticate).
The secret part is 256 random bits, so a plain hash is enough: no slow KDF is needed against guessing.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from accounts import permissions
from accounts.models import API_KEY_PREFIX_LENGTH, ApiKey, ApiKeyScope, Team
from accounts.selectors import API_TOKEN_PREFIX, api_token_hash
LAST_USED_RESOLUTION = timedelta(minutes=1)  # last_used_at is written at most once a minute per key


class ApiKeyRefused(Exception):
    """The key cannot be made or changed (bad input, no permission, too many keys); the message says why."""


def _new_token() -> tuple[str, str]:
    prefix = API_TOKEN_PREFIX + secrets.token_hex(4)
    assert len(prefix) == API_KEY_PREFIX_LENGTH
    return prefix, f"{prefix}_{secrets.token_urlsafe(32)}"


def _clean(*, name: str, scopes, monthly_credit_cap) -> tuple[str, list[str], int | None]:
    name = (name or "").strip()
    if not name:
        raise ApiKeyRefused("Give the key a name (what uses it).")
    if len(name) > 100:
        raise ApiKeyRefused("A key's name has at most 100 characters.")
    known = [scope.value for scope in ApiKeyScope]
    scopes = list(dict.fromkeys(scopes or []))
    unknown = [scope for scope in scopes if scope not in known]
    if unknown:
        raise ApiKeyRefused(f"Unknown scope {unknown[0]!r}: choose from {', '.join(known)}.")
    if not scopes:
        raise ApiKeyRefused("Choose at least one scope.")
    if monthly_credit_cap is not None:
        if isinstance(monthly_credit_cap, bool) or not isinstance(monthly_credit_cap, int) or monthly_credit_cap < 1:
            raise ApiKeyRefused("A monthly credit cap is a whole number of credits, at least 1 (or none).")
        if monthly_credit_cap > 2_000_000_000:
            raise ApiKeyRefused("That monthly credit cap is too large.")
    return name, [scope for scope in known if scope in scopes], monthly_credit_cap


def _owner_filter(*, user=None, team: Team | None = None) -> Q:
    return Q(owner_team_id=team.pk) if team is not None else Q(owner_user_id=user.pk, owner_team__isnull=True)


@transaction.atomic
def api_key_create(
    *, actor, name: str, scopes, monthly_credit_cap: int | None = None, team: Team | None = None
) -> tuple[ApiKey, str]:
    """A new key of `actor`, or with `team` of that team (only its admins and owner may).

    Returns (key, token): the token is shown once and cannot be recovered later.
    """
    name, scopes, monthly_credit_cap = _clean(name=name, scopes=scopes, monthly_credit_cap=monthly_credit_cap)
    if not getattr(actor, "is_authenticated", False) or not actor.is_active:
        raise ApiKeyRefused("Log in to make API keys.")
    if team is not None:
        Team.objects.select_for_update().filter(pk=team.pk).first()  # serialise with role changes
        if not permissions.can_manage_api_keys(permissions.role_of(user=actor, team_id=team.pk)):
            raise ApiKeyRefused("Only the team's admins can make its API keys.")
    limit = settings.STUDIO_API_KEYS_MAX
    active = ApiKey.objects.filter(_owner_filter(user=actor, team=team), revoked_at__isnull=True).count()
    if active >= limit:
        raise ApiKeyRefused(f"At most {limit} active keys: revoke one you no longer use first.")
    for _ in range(5):  # the prefix carries 32 random bits: a clash is rare, a retry settles it
        prefix, token = _new_token()
        try:
            with transaction.atomic():
                key = ApiKey.objects.create(
                    owner_user=None if team is not None else actor,
                    owner_team=team,
                    created_by=actor,
                    name=name,
                    prefix=prefix,
                    secret_hash=api_token_hash(token),
                    scopes=scopes,
                    monthly_credit_cap=monthly_credit_cap,
                )
        except IntegrityError:
            if not ApiKey.objects.filter(prefix=prefix).exists():
                raise
            continue
        return key, token
    raise RuntimeError("Could not find a free API key prefix")  # pragma: no cover


def _may_manage(*, actor, key: ApiKey) -> bool:
    if key.owner_team_id is not None:
        return permissions.can_manage_api_keys(permissions.role_of(user=actor, team_id=key.owner_team_id))
    return key.owner_user_id == actor.pk


@transaction.atomic
def api_key_revoke(*, actor, key: ApiKey) -> ApiKey:
    """Revoke a key now (its owner, or an admin of its team). Revoking a revoked key changes nothing."""
    if not _may_manage(actor=actor, key=key):
        raise ApiKeyRefused("You cannot revoke this key.")
    ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    key.refresh_from_db(fields=["revoked_at"])
    return key


def api_keys_revoke_made_for_team(*, team_id, user_id) -> int:
    """Revoke the team's keys this member made: called when they stop being one of its admins
    (demoted, removed, left), so a token they still hold stops spending the team's credits and
    reading its gallery. The team's other admins make new keys. Returns how many were revoked."""
    return ApiKey.objects.filter(owner_team_id=team_id, created_by_id=user_id, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )


def api_key_touch(*, key: ApiKey, now=None) -> bool:
    """Record that the key was used: one conditional UPDATE, at most once a minute per key (a busy
    key does not write on every request). Returns whether it wrote."""
    now = now or timezone.now()
    if key.last_used_at is not None and now - key.last_used_at < LAST_USED_RESOLUTION:
        return False
    written = ApiKey.objects.filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - LAST_USED_RESOLUTION), pk=key.pk
    ).update(last_used_at=now)
    if written:
        key.last_used_at = now
    return bool(written)
