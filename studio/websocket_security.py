"""Who may open a websocket: a page of this site, served under a host name the site answers to.

Channels' AllowedHostsOriginValidator compares only the Origin's host name with ALLOWED_HOSTS: a
page of any other web app on the same host (another port) could open a user's job socket with
their cookies, and the Host header was never checked. Here the Origin must be exactly one of the
site's own origins (scheme, host and port), and the Host header must be one the site answers to.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.http.request import is_same_domain, split_domain_port, validate_host

DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_origin(value: str) -> str | None:
    """'scheme://host[:port]' in lower case without a default port, or None if it is no origin."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in DEFAULT_PORTS or not host or parts.username is not None:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" if port in (None, DEFAULT_PORTS[scheme]) else f"{scheme}://{host}:{port}"


def allowed_hosts() -> list[str]:
    if settings.DEBUG and not settings.ALLOWED_HOSTS:  # as Django's own Host check does
        return [".localhost", "127.0.0.1", "[::1]"]
    return settings.ALLOWED_HOSTS


def host_is_allowed(host: str) -> bool:
    domain, _port = split_domain_port(host)
    return bool(domain) and validate_host(domain, allowed_hosts())


def request_scheme(scope, headers: dict[bytes, bytes]) -> str:
    """https when the socket came over TLS, to daphne or (with SECURE_PROXY_SSL_HEADER) to the proxy."""
    if scope.get("scheme") in ("wss", "https"):
        return "https"
    proxy_header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy_header:
        name, secure_value = proxy_header
        header = name.removeprefix("HTTP_").replace("_", "-").lower().encode("latin1")
        if headers.get(header, b"").decode("latin1").split(",")[0].strip() == secure_value:
            return "https"
    return "http"


def configured_origins() -> tuple[set[str], list[tuple[str, str]]]:
    """The site URL's origin and CSRF_TRUSTED_ORIGINS: exact ones, and (scheme, domain) pairs for
    the '*.' wildcard entries Django's CSRF check accepts."""
    exact = {origin for origin in [normalize_origin(settings.SITE_URL)] if origin}
    wildcards = []
    for entry in settings.CSRF_TRUSTED_ORIGINS:
        if "://*." in entry:
            scheme, _, netloc = entry.partition("://")
            wildcards.append((scheme.lower(), netloc[1:].lower()))
        elif origin := normalize_origin(entry):
            exact.add(origin)
    return exact, wildcards


def origin_is_allowed(scope) -> bool:
    headers: dict[bytes, bytes] = {}
    for name, value in scope.get("headers", []):
        if name in (b"origin", b"host") and name in headers:
            return False  # two Origin or Host headers: ambiguous, refuse
        headers[name] = value
    try:
        host = headers.get(b"host", b"").decode("ascii").strip().lower()
        origin = normalize_origin(headers.get(b"origin", b"").decode("ascii"))
    except UnicodeDecodeError:
        return False
    if not origin or not host or not host_is_allowed(host):
        return False
    own_origin = normalize_origin(f"{request_scheme(scope, headers)}://{host}")
    exact, wildcards = configured_origins()
    if origin == own_origin or origin in exact:
        return True
    scheme, _, netloc = origin.partition("://")
    return any(scheme == wild_scheme and is_same_domain(netloc, domain) for wild_scheme, domain in wildcards)


class RefuseConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        await self.close(code=4403)  # before accept: daphne answers the handshake with 403


class SameOriginValidator:
    """ASGI middleware: a websocket whose Origin or Host is not this site's is refused (4403)."""

    def __init__(self, application):
        self.application = application
        self.refuse = RefuseConsumer.as_asgi()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not origin_is_allowed(scope):
            return await self.refuse(scope, receive, send)
        return await self.application(scope, receive, send)
