"""The REST API's shared vocabulary (studio/api.py mounts it): problem details, scopes, and the
`/me` endpoint. It lives in accounts, the lowest app, so every app's router can raise the same
problems and ask for the same scopes without importing upwards.

Errors are RFC 9457 problem details (`application/problem+json`) whose `type` is a stable URI per
kind of problem (`/api/problems/<slug>`, listed in PROBLEMS and in docs/api.md); clients branch on
`type` and `status`, never on the wording of `detail`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from ninja import Router, Schema

from accounts.models import ApiKey, ApiKeyScope

PROBLEM_BASE = "/api/problems/"
# slug -> (status, title). The slugs are part of the API: never rename one.
PROBLEMS: dict[str, tuple[int, str]] = {
    "bad-request": (400, "Bad request"),
    "unauthorized": (401, "Missing or invalid API key"),
    "insufficient-credits": (402, "Not enough credits"),
    "key-cap-reached": (402, "The API key's monthly credit cap is reached"),
    "insufficient-scope": (403, "The API key lacks the scope this needs"),
    "forbidden": (403, "Forbidden"),
    "not-found": (404, "Not found"),
    "method-not-allowed": (405, "Method not allowed"),
    "conflict": (409, "Conflict"),
    "model-unavailable": (409, "The model is not offered now"),
    "payload-too-large": (413, "The request body is too large"),
    "unsupported-media-type": (415, "Unsupported media type"),
    "validation-error": (422, "The request is not valid"),
    "rate-limited": (429, "Too many requests"),
    "too-many-active-jobs": (429, "Too many jobs waiting or running"),
    "server-error": (500, "Server error"),
    "job-failed": (502, "The job failed"),
    "timeout": (504, "The job did not finish in time"),
}


def problem_type(slug: str) -> str:
    return PROBLEM_BASE + slug


class ApiProblem(Exception):
    """Raise from any API operation: it becomes a problem+json response of its kind's status."""

    def __init__(self, slug: str, detail: str, *, headers: dict[str, str] | None = None, **extra):
        if slug not in PROBLEMS:
            raise ValueError(f"Unknown problem {slug!r}")
        super().__init__(detail)
        self.slug, self.detail, self.headers, self.extra = slug, detail, headers or {}, extra

    @property
    def status(self) -> int:
        return PROBLEMS[self.slug][0]


def problem_body(slug: str, detail: str, *, instance: str = "", **extra) -> dict:
    status, title = PROBLEMS[slug]
    body = {"type": problem_type(slug), "title": title, "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    body.update(extra)
    return body


class Problem(Schema):
    """RFC 9457 problem details. Validation problems add `errors` (where and what)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[dict] | None = None


def problems(*statuses: int) -> dict[int, type[Problem]]:
    """The `response=` entries for the problems an operation may answer with; every authenticated
    operation may also answer 401 and 429."""
    return {status: Problem for status in sorted({401, 429, *statuses})}


def api_key_of(request) -> ApiKey:
    """The key that authenticated this request (studio/api.py's auth sets request.auth)."""
    return request.auth


def require_scope(request, scope: str) -> ApiKey:
    key = api_key_of(request)
    if not key.has_scope(scope):
        raise ApiProblem(
            "insufficient-scope", f"This needs an API key with the {scope!r} scope; this key has "
            f"{', '.join(key.scopes) or 'none'}. Make a key with it on the API keys page.",
        )
    return key


# --- /me -----------------------------------------------------------------------------------------

router = Router(tags=["account"])


class OwnerOut(Schema):
    kind: Literal["user", "team"]
    id: str
    name: str


class KeyOut(Schema):
    name: str
    prefix: str
    scopes: list[Literal["generate", "read_images", "train"]]
    monthly_credit_cap: int | None
    created_at: datetime


class MeOut(Schema):
    owner: OwnerOut
    key: KeyOut


def owner_of(key: ApiKey) -> OwnerOut:
    if key.owner_team_id is not None:
        return OwnerOut(kind="team", id=str(key.owner_team_id), name=key.owner_team.name)
    user = key.owner_user
    return OwnerOut(kind="user", id=str(user.pk), name=user.get_username())


@router.get("/me", response={200: MeOut, **problems()}, summary="Who this key belongs to, and what it may do")
def me(request):
    key = api_key_of(request)
    return MeOut(
        owner=owner_of(key),
        key=KeyOut(
            name=key.name, prefix=key.prefix, scopes=[s for s in key.scopes if s in ApiKeyScope.values],
            monthly_credit_cap=key.monthly_credit_cap, created_at=key.created_at,
        ),
    )
