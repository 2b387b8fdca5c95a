"""The Content-Security-Policy header (django-csp), with this request's own websocket origin.

CSP 'self' does not match ws:/wss: URLs in every browser (CSP level 2 browsers, older Safari), so
connect-src also names the websocket origin of the host the page was served from. The host comes from
request.get_host(), which Django has already checked against ALLOWED_HOSTS; the site URL alone would
miss a studio reached under another allowed name or port.
"""

from __future__ import annotations

from csp.middleware import CSPMiddleware, PolicyParts
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponseBase


def websocket_sources(request: HttpRequest) -> list[str]:
    try:
        host = request.get_host()
    except DisallowedHost:
        return []
    return [f"ws://{host}", f"wss://{host}"]


class StudioCSPMiddleware(CSPMiddleware):
    def get_policy_parts(self, request: HttpRequest, response: HttpResponseBase,
                         report_only: bool = False) -> PolicyParts:
        parts = super().get_policy_parts(request, response, report_only)
        update = dict(parts.update or {})
        update["connect-src"] = [*update.get("connect-src", ()), *websocket_sources(request)]
        parts.update = update
        return parts
