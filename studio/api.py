"""The REST API: one NinjaAPI (studio/urls.py mounts it at the root), a router per app.

    accounts.api          /api/v1/me, and the shared vocabulary: problem details, scopes
    billing.api           /api/v1/balance, /api/v1/usage
    generation.api        /api/v1/models, /api/v1/samplers, /api/v1/generations
    generation.api.a1111  /sdapi/v1/...: AUTOMATIC1111's dialect

Authentication is an API key (accounts.ApiKey): `Authorization: Bearer sk_live_...`, or HTTP
Basic with the key as the password (what AUTOMATIC1111's `--api-auth` clients send). No session,
no cookie, so no CSRF. Every authenticated request counts against the key's rate limits (a short
burst window and a long sustained one, settings STUDIO_API_RATE_BURST / _SUSTAINED) in the shared
cache; responses carry RateLimit-* headers and a refused one a 429 with Retry-After. The cache is
fail-open (studio/cache.py): while Redis is down the limits lapse rather than the API failing.

Every error is an RFC 9457 problem (application/problem+json) with a stable `type`
(accounts.api.PROBLEMS), ninja's own validation errors and unknown routes under /api/ included.
See docs/api.md.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.security import HttpBasicAuth, HttpBearer

from accounts import services as account_services
from accounts.api import PROBLEM_BASE, PROBLEMS, ApiProblem, problem_body, problem_type
from accounts.api import router as accounts_router
from accounts.selectors import api_key_authenticate
from billing.api import router as billing_router
from generation.api import router as generation_router
from generation.api.a1111 import router as a1111_router

log = logging.getLogger(__name__)
PROBLEM_CONTENT_TYPE = "application/problem+json"


# --- Rate limits ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Window:
    name: str
    limit: int
    seconds: int
    count: int
    reset: int  # seconds until this window starts over

    @property
    def remaining(self) -> int:
        return max(self.limit - self.count, 0)


def _windows() -> list[tuple[str, int, int]]:
    burst, sustained = settings.STUDIO_API_RATE_BURST, settings.STUDIO_API_RATE_SUSTAINED
    return [(name, limit, seconds) for name, (limit, seconds) in (("burst", burst), ("sustained", sustained))
            if limit > 0 and seconds > 0]


def _count(key_id: int, name: str, seconds: int, now: float) -> int | None:
    """This request's number in the key's current fixed window; None when the cache cannot say."""
    bucket = int(now // seconds)
    cache_key = f"api-rate:{key_id}:{name}:{seconds}:{bucket}"
    try:
        cache.add(cache_key, 0, timeout=seconds + 1)
        return cache.incr(cache_key)
    except Exception as error:  # noqa: BLE001 - fail open, like studio.cache: no Redis, no limits
        log.warning("API rate limit not counted (%s): letting the request through", error)
        return None


def rate_limit_hit(key_id: int, *, now: float | None = None) -> list[Window]:
    now = time.time() if now is None else now
    windows = []
    for name, limit, seconds in _windows():
        count = _count(key_id, name, seconds, now)
        if count is None:
            return []
        windows.append(Window(name, limit, seconds, count, max(math.ceil((int(now // seconds) + 1) * seconds - now), 1)))
    return windows


def rate_limit_headers(windows: list[Window]) -> dict[str, str]:
    """IETF draft RateLimit headers: the window closest to its limit, and every policy."""
    if not windows:
        return {}
    tightest = min(windows, key=lambda w: (w.remaining, -w.reset))
    return {
        "RateLimit-Limit": str(tightest.limit),
        "RateLimit-Remaining": str(tightest.remaining),
        "RateLimit-Reset": str(tightest.reset),
        "RateLimit-Policy": ", ".join(f"{w.limit};w={w.seconds};name=\"{w.name}\"" for w in windows),
    }


# --- Authentication ------------------------------------------------------------------------------

def _admit(request: HttpRequest, token: str):
    key = api_key_authenticate(token)
    if key is None:
        return None
    windows = rate_limit_hit(key.pk)
    request._studio_rate_headers = rate_limit_headers(windows)
    over = [w for w in windows if w.count > w.limit]
    if over:
        wait = max(w.reset for w in over)
        raise ApiProblem(
            "rate-limited",
            f"This key made more than {over[0].limit} requests in {over[0].seconds} s; try again in {wait} s.",
            headers={"Retry-After": str(wait)},
        )
    account_services.api_key_touch(key=key)
    return key


class ApiKeyBearer(HttpBearer):
    """`Authorization: Bearer sk_live_...`"""

    def authenticate(self, request, token):
        return _admit(request, token.strip())


class ApiKeyBasic(HttpBasicAuth):
    """HTTP Basic with the API key as the password (or the user name): AUTOMATIC1111's `--api-auth`."""

    def authenticate(self, request, username, password):
        return _admit(request, password) or _admit(request, username)


# --- The API object ------------------------------------------------------------------------------

class StudioAPI(NinjaAPI):
    def create_response(self, request, data, *, status=None, temporal_response=None):
        response = super().create_response(request, data, status=status, temporal_response=temporal_response)
        for header, value in getattr(request, "_studio_rate_headers", {}).items():
            response[header] = value
        if isinstance(data, dict) and str(data.get("type", "")).startswith(PROBLEM_BASE):
            response["Content-Type"] = PROBLEM_CONTENT_TYPE
        return response

    def get_openapi_schema(self, *, path_prefix=None, path_params=None):
        schema = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                if "requestBody" in operation:  # a body that does not parse is a 400 problem, on any of them
                    operation["responses"].setdefault("400", {
                        "description": "Bad Request",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
                    })
                for status, response in operation.get("responses", {}).items():
                    content = response.get("content", {})
                    if int(status) >= 400 and "application/json" in content:
                        content[PROBLEM_CONTENT_TYPE] = content.pop("application/json")
        return schema

    def _get_urls(self):
        urls = super()._get_urls()
        for pattern in urls:  # ninja answers a wrong method in plain text: make it a problem too
            pattern.callback = problem_on_405(pattern.callback)
        return urls


def problem_response(request, slug: str, detail: str, *, headers=None, **extra) -> HttpResponse:
    response = api.create_response(request, problem_body(slug, detail, instance=request.path, **extra),
                                   status=PROBLEMS[slug][0])
    for header, value in (headers or {}).items():
        response[header] = value
    return response


def _problem_if_405(request, response):
    if response.status_code == 405 and not response.get("Content-Type", "").startswith(PROBLEM_CONTENT_TYPE):
        allowed = response.get("Allow", "")
        response = problem_response(request, "method-not-allowed",
                                    f"{request.method} is not allowed here; use {allowed}.")
        response["Allow"] = allowed
    return response


def problem_on_405(view):
    if inspect.iscoroutinefunction(view):  # a path with an async operation (A1111's txt2img): stay async
        @functools.wraps(view)
        async def wrapped_async(request, *args, **kwargs):
            return _problem_if_405(request, await view(request, *args, **kwargs))
        return wrapped_async

    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        return _problem_if_405(request, view(request, *args, **kwargs))
    return wrapped


api = StudioAPI(
    title="Studio API",
    version="1",
    description=(
        "Generate images with Stable Diffusion, pay per use in credits. Authenticate with an API key "
        "(`Authorization: Bearer sk_live_...`) made on the API keys page. Errors are RFC 9457 problem "
        "details. Guide: docs/api.md."
    ),
    auth=[ApiKeyBearer(), ApiKeyBasic()],
    urls_namespace="api",
    docs_url="/api/v1/docs",
    openapi_url="/api/v1/openapi.json",
)
# Mounted at the site's root (studio/urls.py) so one API object serves both dialects: its own
# under /api/v1/ and AUTOMATIC1111's under /sdapi/v1/. (ninja's root view at "" is never reached:
# the home page comes first.)
api.add_router("/api/v1/", accounts_router)
api.add_router("/api/v1/", billing_router)
api.add_router("/api/v1/", generation_router)
api.add_router("/sdapi/v1/", a1111_router)


@api.exception_handler(ApiProblem)
def _problem(request, exc: ApiProblem):
    return problem_response(request, exc.slug, exc.detail, headers=exc.headers, **exc.extra)


@api.exception_handler(AuthenticationError)
def _unauthorized(request, exc):
    header = request.headers.get("Authorization", "")
    detail = ("This API key is not valid: unknown, revoked, or mistyped." if header else
              "Send an API key: `Authorization: Bearer sk_live_...` (make one on the API keys page).")
    return problem_response(request, "unauthorized", detail,
                            headers={"WWW-Authenticate": 'Bearer realm="studio", Basic realm="studio"'})


@api.exception_handler(ValidationError)
def _invalid(request, exc: ValidationError):
    errors = [
        {"loc": [str(part) for part in error.get("loc", ())], "msg": str(error.get("msg", "")),
         "type": str(error.get("type", ""))}
        for error in exc.errors
    ]
    first = errors[0] if errors else {"loc": [], "msg": "invalid"}
    where = ".".join(first["loc"][1:] or first["loc"]) or "request"
    return problem_response(request, "validation-error", f"{where}: {first['msg']}", errors=errors)


@api.exception_handler(RequestDataTooBig)
def _too_large(request, exc):
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE // 2**20
    return problem_response(request, "payload-too-large", f"The request body (files aside) may be at most {limit} MB. "
                            "Send large pictures as multipart/form-data files rather than base64 in JSON.")


@api.exception_handler(SuspiciousOperation)
def _suspicious(request, exc):
    return problem_response(request, "bad-request", "This request is malformed (too many fields, or a bad header).")


@api.exception_handler(Http404)
def _not_found(request, exc):
    return problem_response(request, "not-found", "There is nothing here, or it is not yours.")


_SLUG_FOR_STATUS = {400: "bad-request", 401: "unauthorized", 402: "insufficient-credits", 403: "forbidden",
                    404: "not-found", 405: "method-not-allowed", 409: "conflict", 413: "payload-too-large",
                    415: "unsupported-media-type", 422: "validation-error", 429: "rate-limited"}


@api.exception_handler(HttpError)
def _http_error(request, exc: HttpError):
    slug = _SLUG_FOR_STATUS.get(exc.status_code, "bad-request" if exc.status_code < 500 else "server-error")
    return problem_response(request, slug, str(exc) or PROBLEMS[slug][1])


@api.exception_handler(Exception)
def _server_error(request, exc):
    log.exception("API error on %s %s", request.method, request.path, exc_info=exc)
    return problem_response(request, "server-error", "Something went wrong on our side; it was logged.")


# --- Outside the API object: unknown routes under /api/, and the problem types themselves ---------

def api_not_found(request, rest: str = ""):
    return problem_response(request, "not-found", f"No API endpoint at {request.path}; see /api/v1/docs.")


API_PATHS = r"^(api|sdapi)/"  # studio/urls.py answers unknown paths under these with api_not_found


def problem_type_page(request, slug: str):
    """`type` URIs resolve: GET /api/problems/<slug> says what that problem means."""
    if slug not in PROBLEMS:
        return api_not_found(request)
    status, title = PROBLEMS[slug]
    return JsonResponse({"type": problem_type(slug), "status": status, "title": title})


