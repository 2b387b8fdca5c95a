"""Two people in one team, two browser contexts on one live stack (daphne, worker, Redis).

A generates into the team gallery through Create's "Save to"; B, with the team gallery open, sees
the image arrive without reloading (and A's own My images and a second Create tab get it too).
A removes B on the team page; B's open page has its socket closed (4404), says so and no longer
updates; B's next requests for the team gallery and the image are 404s.
"""

from __future__ import annotations

import time

import pytest

from accounts.models import TeamRole
from accounts.services import teams as team_rules
from generation.models import Image, Job, JobState
from generation.services import teams as team_services
from tests.e2e.browser_fixtures import (  # noqa: F401  (fixtures)
    _fresh_redis_state,
    browser,
    browser_session_factory,
    live_stack,
    orm,
    shared_live_stack,
    shots,
    signed_in,
)

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

TILES = "#gallery-grid [data-gallery-tile]"
STEPS = 6  # the demo model at 512x512: a few seconds on a busy CPU

# Every websocket open, close (with its code) and message, per element, from before the page's scripts.
RECORD_SOCKETS = """window.__ws = [];
for (const name of ['htmx:wsOpen', 'htmx:wsClose', 'htmx:wsAfterMessage']) {
  document.addEventListener(name, e => window.__ws.push({name, id: e.target.id,
    code: (e.detail && e.detail.event && e.detail.event.code) || null}));
}"""


def socket_event(page, name: str, element_id: str, code: int | None = None, timeout: float = 20_000) -> None:
    page.wait_for_function(
        "([name, id, code]) => window.__ws.some(e => e.name === name && e.id === id"
        " && (code === null || e.code === code))", arg=[name, element_id, code], timeout=timeout)


def socket_events(page, name: str, element_id: str) -> int:
    return page.evaluate("([name, id]) => window.__ws.filter(e => e.name === name && e.id === id).length",
                         [name, element_id])


def open_live(page, path: str, grid_id: str = "gallery-grid") -> None:
    page.goto(path)
    socket_event(page, "htmx:wsOpen", grid_id)
    page.evaluate("() => { window.__sameDocument = true; }")  # gone if the page reloads


def generate_into_team(page, team, prompt: str) -> Job:
    """Create's form, saving into the team: returns the finished job."""
    page.goto("/create/")
    page.fill("#id_prompt", prompt)
    page.fill("#id_steps", str(STEPS))
    page.select_option("#id_save_to", str(team.pk))
    page.click("#create-form button[type=submit]")
    panel = page.locator("#current-jobs [data-job-panel]").first
    panel.wait_for()
    job_id = panel.get_attribute("id").removeprefix("job-")
    page.wait_for_selector(f'#job-{job_id} [data-state="succeeded"]', timeout=90_000)
    with orm():
        job = Job.objects.get(pk=job_id)
    assert job.state == JobState.SUCCEEDED and job.team_id == team.pk
    return job


def test_a_team_image_appears_live_for_a_member_until_they_are_removed(signed_in, shots):
    session_a, page_a, user_a = signed_in()
    session_b, page_b, user_b = signed_in()
    with orm():
        team = team_services.team_create(user=user_a, name="Harbour studio")
        invitation = team_rules.invitation_create(team=team, actor=user_a, email=user_b.email, role=TeamRole.MEMBER,
                                                  link_for=lambda token: f"/invitations/{token}/")
        team_rules.invitation_accept(invitation=invitation, user=user_b)
    for page in (page_a, page_b):
        page.add_init_script(RECORD_SOCKETS)
    team_gallery = f"/teams/{team.pk}/gallery/"

    # B watches the (empty) team gallery; A watches My images and Create's Recent in other tabs.
    open_live(page_b, team_gallery)
    assert page_b.locator(TILES).count() == 0
    shots(page_b, "1-b-team-gallery-empty", full_page=False)
    a_gallery = session_a.context.new_page()
    a_gallery.add_init_script(RECORD_SOCKETS)
    open_live(a_gallery, "/gallery/")
    a_create = session_a.context.new_page()
    a_create.add_init_script(RECORD_SOCKETS)
    open_live(a_create, "/create/", grid_id="recent-jobs")

    # A generates into the team gallery through Create's "Save to".
    job = generate_into_team(page_a, team, "a lighthouse keeper's cat, watercolour")
    with orm():
        image = Image.objects.get(job=job)
    tile = f"#image-{image.pk}"
    page_b.locator(tile).wait_for(timeout=20_000)
    assert page_b.evaluate("() => window.__sameDocument === true"), "B's page reloaded"
    assert page_b.locator(TILES).count() == 1
    assert user_a.email in page_b.locator(f"{tile} [data-image-owner]").inner_text()
    page_b.wait_for_function(f"() => document.querySelector('{tile} img').naturalWidth > 0")
    assert page_b.locator(".gallery-empty").is_hidden()
    shots(page_b, "2-b-team-image-arrived", full_page=False)

    a_gallery.locator(tile).wait_for(timeout=20_000)  # A's own gallery: A still owns the image
    assert a_gallery.evaluate("() => window.__sameDocument === true") and a_gallery.locator(TILES).count() == 1
    a_gallery.locator(f"{tile} [data-favourite-toggle]").click()  # a pushed tile's forms work (htmx, CSRF)
    a_gallery.locator(f"{tile} [data-favourite-toggle][aria-pressed=true]").wait_for()
    with orm():
        assert Image.objects.get(pk=image.pk).favourite is True
    a_create.locator(f"#recent-jobs #recent-job-{job.pk} img").wait_for(timeout=20_000)
    assert a_create.evaluate("() => window.__sameDocument === true")
    shots(a_create, "3-a-create-recent-live", full_page=False)

    # A page opened now catches up on what arrived a moment ago, without doubling the tile.
    b_second = session_b.context.new_page()
    b_second.add_init_script(RECORD_SOCKETS)
    open_live(b_second, team_gallery)
    socket_event(b_second, "htmx:wsAfterMessage", "gallery-grid")
    assert b_second.locator(tile).count() == 1 and b_second.locator(TILES).count() == 1
    b_second.close()

    # A removes B on the team page (the Remove link, then the confirmation).
    page_a.goto(f"/teams/{team.pk}/")
    page_a.locator(f'[data-member="{user_b.email}"] >> text=Remove').click()
    page_a.wait_for_url(f"**/teams/{team.pk}/members/{user_b.pk}/remove/")
    shots(page_a, "4-a-confirm-remove")
    page_a.click("[data-confirm-action]")
    page_a.wait_for_url(f"**/teams/{team.pk}/")
    assert page_a.locator(f'[data-member="{user_b.email}"]').count() == 0

    # B's open page: its socket is closed with 4404, it says so, and it does not reconnect.
    socket_event(page_b, "htmx:wsClose", "gallery-grid", code=4404)
    page_b.locator(".live-stopped").wait_for()
    assert page_b.evaluate("() => window.__sameDocument === true")
    shots(page_b, "5-b-live-stopped", full_page=False)
    opens = socket_events(page_b, "htmx:wsOpen", "gallery-grid")

    # A makes another team image: B's page no longer updates; A's gallery still does.
    second = generate_into_team(page_a, team, "a second cat on the harbour wall")
    with orm():
        second_image = Image.objects.get(job=second)
    a_gallery.locator(f"#image-{second_image.pk}").wait_for(timeout=20_000)
    time.sleep(1.0)  # B's page had as long as A's gallery took, and a second more
    assert page_b.locator(TILES).count() == 1 and page_b.locator(f"#image-{second_image.pk}").count() == 0
    assert socket_events(page_b, "htmx:wsOpen", "gallery-grid") == opens
    assert not session_b.console_errors, session_b.console_errors
    assert not session_a.console_errors, session_a.console_errors

    # B's next requests: the team gallery, the image page and its files are 404s.
    for path in (team_gallery, f"/images/{image.pk}/", f"/images/{image.pk}/thumbnail.webp",
                 f"/images/{image.pk}/original.png", f"/jobs/{job.pk}/"):
        assert page_b.request.get(path).status == 404, path
    response = page_b.goto(team_gallery)
    assert response.status == 404
    shots(page_b, "6-b-team-gallery-404", full_page=False)
