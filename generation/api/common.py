"""What the generation app's API routers share: a read scope check, a page of a list, a file answer
in the schema."""

from __future__ import annotations

from accounts.api import ApiProblem, api_key_of
from accounts.models import ApiKey


def require_any_scope(request, scopes: tuple[str, ...], reading: str) -> ApiKey:
    """The request's key, if it has one of `scopes` (else a 403 naming them)."""
    key = api_key_of(request)
    if not any(key.has_scope(scope) for scope in scopes):
        names = " or ".join(repr(scope) for scope in scopes)
        raise ApiProblem("insufficient-scope", f"Reading {reading} needs the {names} scope.")
    return key


def key_user(request):
    """The user a key acts as for private things (their full-fine-tune models): a user key's owner;
    None for a team key (it acts for the team)."""
    key = api_key_of(request)
    return key.owner_user if key.owner_team_id is None else None


def page_of(rows, query) -> tuple[list, int]:
    """One page of an ordered queryset (or list) by the query's `offset` and `limit`, and the total."""
    page = list(rows[query.offset:query.offset + query.limit])
    return page, len(rows) if isinstance(rows, list) else rows.count()


def file_response(description: str, media_type: str) -> dict:
    """`openapi_extra` for an operation whose 200 is a file, not JSON."""
    return {"responses": {"200": {"description": description, "content": {
        media_type: {"schema": {"type": "string", "format": "binary"}}}}}}
