"""Websockets open only from this site's own pages, on a host name the site answers to.

Through studio.asgi.application on the real Redis channel layer, with a real session: the job
socket of the user whose cookies the browser sends.
"""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from studio.asgi import application
from tests.factories import make_user, submit_job
from tests.generation.test_consumers import session_cookie

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def open_job_socket(*, host: bytes | None, origin: bytes | None, extra=()):
    owner = await sync_to_async(make_user)(credits=50)
    job = await sync_to_async(submit_job)(owner)
    headers = [(b"cookie", (await sync_to_async(session_cookie)(owner)).encode()), *extra]
    headers += [(b"host", host)] if host is not None else []
    headers += [(b"origin", origin)] if origin is not None else []
    communicator = WebsocketCommunicator(application, f"/ws/jobs/{job.pk}/", headers=headers)
    connected, code = await communicator.connect()
    await communicator.disconnect()  # let a refused consumer finish inside this test's loop
    return connected, code


@pytest.mark.parametrize("host, origin", [
    (b"127.0.0.1:8000", b"http://127.0.0.1:8000"),
    (b"localhost:8000", b"http://localhost:8000"),
    (b"LOCALHOST:8000", b"http://localhost:8000"),
    (b"127.0.0.1", b"http://127.0.0.1:80"),
    (b"[::1]:8000", b"http://[::1]:8000"),
])
async def test_a_page_of_the_same_origin_gets_in(host, origin):
    connected, _ = await open_job_socket(host=host, origin=origin)
    assert connected


@pytest.mark.parametrize("host, origin", [
    (b"127.0.0.1:8000", b"http://127.0.0.1:9999"),  # another web app on this host, another port
    (b"127.0.0.1:8000", b"http://127.0.0.1"),
    (b"localhost:8000", b"http://localhost:3000"),
    (b"127.0.0.1:8000", b"https://127.0.0.1:8000"),  # another scheme is another origin
    (b"127.0.0.1:8000", b"http://evil.example"),
    (b"127.0.0.1:8000", b"null"),
    (b"127.0.0.1:8000", None),
])
async def test_a_page_of_another_origin_is_refused(host, origin):
    connected, code = await open_job_socket(host=host, origin=origin)
    assert not connected and code == 4403


@pytest.mark.parametrize("host, origin", [
    (b"evil.example", b"http://evil.example"),  # a rebinding name pointing at this host
    (b"evil.example:8000", b"http://127.0.0.1:8000"),
    (None, b"http://127.0.0.1:8000"),
])
async def test_a_host_the_site_does_not_answer_to_is_refused(host, origin):
    connected, code = await open_job_socket(host=host, origin=origin)
    assert not connected and code == 4403


async def test_two_origin_headers_are_refused():
    connected, _ = await open_job_socket(host=b"127.0.0.1:8000", origin=b"http://127.0.0.1:8000",
                                         extra=[(b"origin", b"http://evil.example")])
    assert not connected


async def test_behind_a_tls_proxy_the_public_https_origin_gets_in(settings):
    """The proxy speaks plain ws to daphne; the site URL (or the proxy's scheme header) says https."""
    settings.ALLOWED_HOSTS = ["studio.example.com"]
    settings.SITE_URL = "https://studio.example.com"
    connected, _ = await open_job_socket(host=b"studio.example.com", origin=b"https://studio.example.com")
    assert connected

    settings.SITE_URL = "https://elsewhere.example.com"
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    connected, _ = await open_job_socket(host=b"studio.example.com", origin=b"https://studio.example.com",
                                         extra=[(b"x-forwarded-proto", b"https")])
    assert connected
    connected, _ = await open_job_socket(host=b"studio.example.com", origin=b"http://studio.example.com",
                                         extra=[(b"x-forwarded-proto", b"https")])
    assert not connected


async def test_csrf_trusted_origins_are_own_origins_too(settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://studio.example.com:8443", "https://*.example.org"]
    cases = [(b"https://studio.example.com:8443", True), (b"https://studio.example.com", False),
             (b"https://app.example.org", True), (b"http://app.example.org", False)]
    for origin, expected in cases:
        connected, _ = await open_job_socket(host=b"127.0.0.1:8000", origin=origin)
        assert connected == expected, origin
