"""Fixtures for end-to-end tests: the real stack (daphne, Celery worker and beat, Redis) on the test DB."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from django.db import connection

from tests.factories import make_user
from tests.live_stack import LiveStack, database_url_for, stack_environment

E2E_ENV = {
    "STUDIO_JOB_LEASE_SECONDS": "3",
    "STUDIO_SWEEP_INTERVAL_SECONDS": "1",
    "STUDIO_JOB_MAX_ATTEMPTS": "3",
}


@contextmanager
def running_stack(name: str) -> Iterator[LiveStack]:
    """daphne, one worker and beat on the test database, with the e2e lease and sweep settings."""
    env = stack_environment(database_url=database_url_for(connection.settings_dict), overrides=E2E_ENV)
    stack = LiveStack(env=env, log_dir=Path(os.environ["STUDIO_VAR_DIR"]) / "e2e-logs" / name)
    try:
        stack.start_web()
        stack.start_worker()
        stack.start_beat()
        yield stack
    finally:
        stack.stop()


@contextmanager
def stack_to_start(request, **overrides) -> Iterator[LiveStack]:
    """A stack on the test database with the e2e settings (and `overrides`) whose processes the
    test starts itself; stopped after the test, its logs printed when the test failed."""
    env = stack_environment(database_url=database_url_for(connection.settings_dict), overrides={**E2E_ENV, **overrides})
    stack = LiveStack(env=env, log_dir=Path(os.environ["STUDIO_VAR_DIR"]) / "e2e-logs" / request.node.name)
    try:
        yield stack
    finally:
        stack.stop()
        if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
            print(stack.logs())


@pytest.fixture
def live_stack(transactional_db, request, tmp_path):
    with running_stack(request.node.name) as stack:
        try:
            yield stack
        finally:
            if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
                print(stack.logs())


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


class WebUser:
    """A signed-in browser-less user of the live stack: real HTTP with session and CSRF cookies."""

    def __init__(self, stack: LiveStack, email: str, password: str):
        self.stack = stack
        self.http = requests.Session()
        self.http.headers["Referer"] = stack.base_url + "/"
        page = self.http.get(f"{stack.base_url}/accounts/login/")
        assert page.status_code == 200, page.text[:500]
        response = self.http.post(
            f"{stack.base_url}/accounts/login/",
            data={"login": email, "password": password, "csrfmiddlewaretoken": self.http.cookies["csrftoken"]},
            allow_redirects=False,
        )
        assert response.status_code == 302, response.text[:2000]

    @property
    def cookie_header(self) -> str:
        return "; ".join(f"{name}={value}" for name, value in self.http.cookies.items())

    def post_form(self, path: str, data: dict, **kwargs) -> requests.Response:
        return self.http.post(
            self.stack.base_url + path, data={**data, "csrfmiddlewaretoken": self.http.cookies["csrftoken"]}, **kwargs
        )


@pytest.fixture
def web_user_factory(live_stack):
    def make(credits: int = 200) -> tuple[WebUser, object]:
        password = "Pw-e2e-Studio-123"
        user = make_user(credits=credits, password=password)
        from allauth.account.models import EmailAddress

        EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
        return WebUser(live_stack, user.email, password), user

    return make
