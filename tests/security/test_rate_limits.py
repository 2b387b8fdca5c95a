"""Login rate limits: shared by every web process (the Redis cache), per client behind proxies."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from django.db import connection

from studio.settings import BASE_DIR

pytestmark = pytest.mark.django_db(transaction=True)

LOGIN = "/accounts/login/"
TOO_MANY = "Too many failed login attempts"


def failed_login(client, email: str, **headers) -> str:
    response = client.post(LOGIN, {"login": email, "password": "wrong-password"}, **headers)
    assert response.status_code == 200  # the form again, with its error
    return response.content.decode()


def database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"


def failed_logins_in_another_process(email: str, count: int, address: str) -> list[str]:
    """What another web process answers to `count` failed logins: it shares only the database and
    Redis with this one."""
    script = textwrap.dedent(f"""
        import django
        django.setup()
        from django.test import Client
        client = Client()
        for _ in range({count}):
            response = client.post("{LOGIN}", {{"login": "{email}", "password": "wrong-password"}},
                                   REMOTE_ADDR="{address}", HTTP_HOST="127.0.0.1")
            print(response.status_code, "{TOO_MANY}" in response.content.decode())
    """)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "studio.settings", "DATABASE_URL": database_url()}
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=BASE_DIR, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.split("\n")[:count]


def test_failed_logins_count_across_web_processes(client):
    """allauth allows 5 failed logins per account in 5 minutes: 3 here and 2 in another process
    use them up, so the next one here is refused."""
    email, address = "victim@example.com", "198.51.100.20"
    for _ in range(3):
        assert TOO_MANY not in failed_login(client, email, REMOTE_ADDR=address)
    assert failed_logins_in_another_process(email, 2, address) == ["200 False", "200 False"]
    assert TOO_MANY in failed_login(client, email, REMOTE_ADDR=address)


@pytest.fixture
def three_failures_per_address(settings):
    settings.ACCOUNT_RATE_LIMITS = {**settings.ACCOUNT_RATE_LIMITS, "login_failed": "3/m/ip,50/m/key"}


def fail_three_times_through_the_proxy(client, client_address: str) -> None:
    for number in range(3):
        assert TOO_MANY not in failed_login(client, f"someone{number}@example.com", REMOTE_ADDR="10.0.0.1",
                                            HTTP_X_FORWARDED_FOR=client_address)


def test_behind_a_trusted_proxy_one_client_does_not_lock_out_the_others(client, settings,
                                                                        three_failures_per_address):
    settings.ALLAUTH_TRUSTED_PROXY_COUNT = 1
    fail_three_times_through_the_proxy(client, "198.51.100.1")
    assert TOO_MANY in failed_login(client, "more@example.com", REMOTE_ADDR="10.0.0.1",
                                    HTTP_X_FORWARDED_FOR="198.51.100.1")
    assert TOO_MANY not in failed_login(client, "more@example.com", REMOTE_ADDR="10.0.0.1",
                                        HTTP_X_FORWARDED_FOR="198.51.100.2")
    # Only the entry our proxy appended counts: what the client wrote to its left does not.
    assert TOO_MANY in failed_login(client, "more@example.com", REMOTE_ADDR="10.0.0.1",
                                    HTTP_X_FORWARDED_FOR="203.0.113.9, 198.51.100.1")


def test_without_a_trusted_proxy_count_x_forwarded_for_is_ignored(client, settings,
                                                                  three_failures_per_address):
    assert settings.ALLAUTH_TRUSTED_PROXY_COUNT == 0
    fail_three_times_through_the_proxy(client, "198.51.100.1")
    assert TOO_MANY in failed_login(client, "more@example.com", REMOTE_ADDR="10.0.0.1",
                                    HTTP_X_FORWARDED_FOR="198.51.100.2")


def test_a_request_that_bypassed_a_proxy_is_limited_by_its_own_address(client, settings,
                                                                       three_failures_per_address):
    """Two trusted proxies but a shorter X-Forwarded-For: allauth alone would raise (a 500)."""
    settings.ALLAUTH_TRUSTED_PROXY_COUNT = 2
    for number in range(3):
        assert TOO_MANY not in failed_login(client, f"direct{number}@example.com", REMOTE_ADDR="192.0.2.7",
                                            HTTP_X_FORWARDED_FOR="198.51.100.1")
    assert TOO_MANY in failed_login(client, "more@example.com", REMOTE_ADDR="192.0.2.7",
                                    HTTP_X_FORWARDED_FOR="198.51.100.99")


@pytest.fixture
def cache_outage_forgotten_after():
    """The outage state is per process: the next test starts with Redis believed reachable."""
    from studio import cache

    yield
    cache._outage.update(on=False, retry_at=0.0)


def test_without_redis_logins_go_on_without_rate_limits(client, settings, caplog,
                                                        cache_outage_forgotten_after):
    """The shared cache is unreachable: a failed login is still just a failed login, not a 500."""
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": "redis://127.0.0.1:1/0"}}
    with caplog.at_level("WARNING", logger="studio.cache"):
        for _ in range(6):  # beyond the 5 per account: nothing counts them while Redis is away
            assert TOO_MANY not in failed_login(client, "victim@example.com", REMOTE_ADDR="198.51.100.20")
    assert [r.getMessage()[:26] for r in caplog.records] == ["Shared cache unreachable ("]


def timed_failed_logins(client, email: str, count: int = 3) -> float:
    started = time.monotonic()
    for _ in range(count):
        assert TOO_MANY not in failed_login(client, email, REMOTE_ADDR="198.51.100.20")
    return time.monotonic() - started


def test_a_hung_redis_holds_logins_for_about_one_socket_timeout(client, settings,
                                                                cache_outage_forgotten_after):
    """A Redis that accepts connections but never answers: one timeout, then the cache is skipped
    for a while (each login asks it about a dozen times)."""
    with_redis = timed_failed_logins(client, "first@example.com")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    location = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": location}}
    try:
        with_hung_redis = timed_failed_logins(client, "second@example.com")
    finally:
        silent.close()
    assert with_hung_redis - with_redis < 3  # one socket timeout of 1 s, and noise
