"""Playwright (sync API) driving Debian's Chromium against the live stack, with screenshots.

No pytest-playwright plugin: one browser per test session, one fresh context per test (or more,
for a second user). Screenshots go to test-artifacts/screenshots/<test name>-<label>.png; they
are for people to look at, so every browser test takes them at the moments that matter.

Playwright's sync API and the Django ORM in one thread: the sync API runs its asyncio loop in a
greenlet of this thread and, between calls, leaves that loop marked as this thread's running
loop (playwright/_impl/_greenlets.py, wait_for_future). Django then refuses ORM calls
(SynchronousOnlyOperation: "You cannot call this from an async context"). Setting
DJANGO_ALLOW_ASYNC_UNSAFE would leak into the stack's processes (they copy this environment) and
hide real async-safety bugs there, so instead ORM code between Playwright calls runs inside
``orm()``, which unmarks the loop for its duration; fixtures unmark it when a test's browser
sessions close (pytest-django flushes the database after that) and mark it again before the next
Playwright call.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import re
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.live_stack import BASE_DIR

CHROMIUM = os.environ.get("STUDIO_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]
SCREENSHOT_DIR = BASE_DIR / "test-artifacts" / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def _chromium_path() -> str | None:
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    return shutil.which("chromium") or shutil.which("chromium-browser")


class _PlaywrightLoop:
    """The loop of the sync API, marked as running only while Playwright may be called."""

    loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def resume(cls) -> None:
        if cls.loop is not None and not cls.loop.is_closed():
            asyncio._set_running_loop(cls.loop)

    @staticmethod
    def park() -> None:
        asyncio._set_running_loop(None)


@contextmanager
def orm():
    """Run Django ORM code between Playwright calls (see the module docstring)."""
    current = asyncio._get_running_loop()
    asyncio._set_running_loop(None)
    try:
        yield
    finally:
        asyncio._set_running_loop(current)


# --- One live stack per browser test module -------------------------------------------------------
# Starting daphne, a worker (it loads the model) and beat for every test cost most of a browser test's
# time on a small CPU. The module shares one stack; each test still gets a flushed database
# (transactional_db) and a web process that answers (a test may have stopped it).

@pytest.fixture(scope="module")
def shared_live_stack(request, django_db_setup, django_db_blocker):
    from tests.e2e.conftest import running_stack

    with django_db_blocker.unblock(), running_stack(request.module.__name__) as stack:
        yield stack


@pytest.fixture
def live_stack(transactional_db, shared_live_stack, request):
    """The module's stack for one test (overrides tests/e2e/conftest.py's stack per test)."""
    if not shared_live_stack.processes["web"].alive():
        shared_live_stack.start_web()
    yield shared_live_stack
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        print(shared_live_stack.logs())


@pytest.fixture(autouse=True)
def _fresh_redis_state():
    """Overrides the suite's per-test flush of Redis: the shared stack's worker and web process keep
    their broker bindings (kombu's routing tables live in Redis) across the module's tests."""
    yield


@pytest.fixture(scope="session")
def browser():
    path = _chromium_path()
    if path is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    _PlaywrightLoop.loop = asyncio._get_running_loop()
    try:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        _PlaywrightLoop.park()
        try:
            yield browser
        finally:
            _PlaywrightLoop.resume()
            browser.close()
    finally:
        _PlaywrightLoop.resume()
        playwright.stop()
        _PlaywrightLoop.loop = None


class Shots:
    """Full-page screenshots named after the test: shots(page, "final")."""

    def __init__(self, test_name: str):
        self.prefix = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name.removeprefix("test_"))[:60]
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        self.taken: list[Path] = []

    def __call__(self, page, label: str, *, full_page: bool = True) -> Path:
        path = SCREENSHOT_DIR / f"{self.prefix}-{label}.png"
        if full_page:  # a sticky header would otherwise be drawn where the page was scrolled to
            page.evaluate("() => window.scrollTo(0, 0)")
        page.screenshot(path=str(path), full_page=full_page, animations="disabled")
        self.taken.append(path)
        return path


@pytest.fixture
def shots(request) -> Shots:
    return Shots(request.node.name)


class BrowserSession:
    """One browser context (its own cookies) on the live stack, with console errors collected."""

    def __init__(self, browser, base_url: str, *, viewport=DESKTOP, color_scheme: str = "light"):
        self.base_url = base_url
        _PlaywrightLoop.resume()
        self.context = browser.new_context(base_url=base_url, viewport=viewport, color_scheme=color_scheme,
                                           accept_downloads=True)
        self.context.set_default_timeout(20_000)
        self.page = self.context.new_page()
        self.console_errors: list[str] = []
        self.page.on("console", lambda msg: msg.type == "error" and self.console_errors.append(msg.text))
        self.page.on("pageerror", lambda exc: self.console_errors.append(f"pageerror: {exc}"))

    def sign_in_as(self, web_user) -> None:
        """Carry a WebUser's logged-in session (real login over HTTP) into this browser context."""
        host = self.base_url.split("//", 1)[1].split(":", 1)[0]
        cookies = web_user.http.cookies.items()
        self.context.add_cookies([{"name": k, "value": v, "domain": host, "path": "/"} for k, v in cookies])

    def close(self) -> None:
        _PlaywrightLoop.resume()
        self.context.close()


@pytest.fixture
def browser_session_factory(browser, live_stack):
    sessions: list[BrowserSession] = []

    def make(**kwargs) -> BrowserSession:
        session = BrowserSession(browser, live_stack.base_url, **kwargs)
        sessions.append(session)
        return session

    try:
        yield make
    finally:
        for session in sessions:
            session.close()
        _PlaywrightLoop.park()  # pytest-django flushes the database next


@pytest.fixture
def signed_in(browser_session_factory, web_user_factory):
    """A verified user with credits, signed in in a fresh browser context: (session, page, user)."""

    def make(credits: int = 200, **kwargs):
        with orm():
            web_user, user = web_user_factory(credits=credits)
        session = browser_session_factory(**kwargs)
        session.sign_in_as(web_user)
        return session, session.page, user

    return make


# --- Mail ------------------------------------------------------------------------------------------

def mail_dir() -> Path:
    return Path(os.environ["STUDIO_VAR_DIR"]) / "mail"


def mail_files() -> set[Path]:
    directory = mail_dir()
    return set(directory.glob("*")) if directory.exists() else set()


def mail_bodies(path: Path) -> list[str]:
    """The text bodies of the messages in one file of Django's file-based backend (decoded)."""
    raw = path.read_bytes()
    bodies = []
    for chunk in re.split(rb"\n-{79}\n", raw):
        if not chunk.strip():
            continue
        message = email.message_from_bytes(chunk.lstrip(b"\n"), policy=email.policy.default)
        for part in message.walk():
            if part.get_content_type() == "text/plain":
                bodies.append(part.get_content())
    return bodies


def wait_for_new_mail(before: set[Path], timeout: float = 20) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = mail_files() - before
        if new:
            time.sleep(0.2)  # let the backend finish writing
            return max(new, key=lambda p: p.stat().st_mtime)
        time.sleep(0.1)
    raise TimeoutError(f"no new mail under {mail_dir()} after {timeout}s")
