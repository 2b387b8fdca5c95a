"""Teams in Chromium on the live stack: A creates a team from the nav, invites B by email (the link
comes from the real mail backend's file), B accepts in a second browser, A makes B a viewer;
a used link tells a third person so. Screenshots on a desktop and a phone.

A team's credits page: the owner moves credits in (and is told plainly when they ask for more than
they have), sets a member's monthly cap; the member, on a phone, sees the balance, their limit and
their own use only.

Two people in one team, two browser contexts: A generates into the team gallery through Create's
"Save to"; B, with the team gallery open, sees the image arrive without reloading (and A's own My
images and a second Create tab get it too). A removes B on the team page; B's open page has its
socket closed (4404), says so and no longer updates; B's next requests for the team gallery and the
image are 404s.

The module's tests share one live stack (daphne, worker, Redis) and the session's browser."""

from __future__ import annotations

import io
import re
import time

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image as PILImage

from accounts.models import Membership, Team, TeamRole
from accounts.services import teams as team_rules
from billing.selectors import team_wallet_balance
from billing.services import credits_reserve
from generation.models import Image, Job, JobState
from generation.services import teams as team_services
from tests.billing.support import make_job, make_team
from tests.e2e.browser_fixtures import (  # noqa: F401  (fixtures)
    PHONE,
    _fresh_redis_state,
    browser,
    browser_session_factory,
    live_stack,
    mail_bodies,
    mail_files,
    orm,
    shared_live_stack,
    shots,
    signed_in,
    wait_for_new_mail,
)

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

LINK = re.compile(r"https?://\S+/invitations/[A-Za-z0-9_-]+/")


def make_team_images(team, owner, count: int) -> None:
    for number in range(count):
        job = Job.objects.create(
            user=owner,
            team=team,
            state=JobState.SUCCEEDED,
            prompt=f"night shift study {number}",
            width=64,
            height=64,
            steps=4,
            guidance_scale=7,
            sampler="euler",
            seed=number,
            num_images=1,
            model_name="t",
            cost=1,
        )
        buffer = io.BytesIO()
        PILImage.new("RGB", (64, 64), (30 + 60 * number, 80, 160)).save(buffer, "PNG")
        png = default_storage.save(f"images/{owner.pk}/{job.pk}/0.png", ContentFile(buffer.getvalue()))
        Image.objects.create(
            job=job,
            owner=owner,
            team=team,
            index=0,
            seed=number,
            width=64,
            height=64,
            file=png,
            thumbnail=png,
            infotext="x",
        )


def member_row(page, email: str):
    return page.locator(f"[data-member='{email}']")


def test_invite_accept_and_change_role(signed_in, shots):
    session_a, page_a, owner = signed_in()
    session_b, page_b, invitee = signed_in()
    session_c, page_c, stranger = signed_in()

    page_a.goto("/")
    page_a.click("nav >> text=Teams")
    page_a.wait_for_url("**/teams/")
    assert page_a.locator("nav a[aria-current=page]").inner_text() == "Teams"
    page_a.fill("input[name=name]", "Night Shift")
    page_a.click("button:has-text('Create team')")
    page_a.wait_for_url(re.compile(r".*/teams/[0-9a-f-]{36}/$"))
    assert "Night Shift" in page_a.locator("h1").inner_text()
    team_url = page_a.url
    assert member_row(page_a, owner.email).locator("[data-role]").inner_text().strip().lower() == "owner"

    before = mail_files()
    page_a.fill("input[name=email]", invitee.email.upper())
    page_a.select_option("select[name=role]", "member")
    page_a.click("button:has-text('Send invitation')")
    page_a.wait_for_selector(f"text=Invitation sent to {invitee.email.upper()}")
    assert page_a.locator(f"[data-invitation='{invitee.email.upper()}']").count() == 1
    shots(page_a, "1-owner-invited")
    body = "\n".join(mail_bodies(wait_for_new_mail(before)))
    link = LINK.search(body).group(0)
    assert "Night Shift" in body

    page_b.goto(link)
    assert page_b.locator("button:has-text('Accept and join')").count() == 1
    shots(page_b, "2-invitee-invitation")
    page_b.click("button:has-text('Accept and join')")
    page_b.wait_for_url(re.compile(r".*/teams/[0-9a-f-]{36}/$"))
    page_b.wait_for_selector("text=Welcome to Night Shift")
    assert member_row(page_b, invitee.email).locator("[data-role]").inner_text().strip().lower() == "member"
    assert page_b.locator("text=Change role").count() == 0  # members manage nobody
    shots(page_b, "3-invitee-joined")

    page_c.goto(link)  # single use: the next person is told so
    assert "already been used" in page_c.locator("[data-invitation-problem]").inner_text()
    shots(page_c, "3b-someone-else-opens-the-used-link")
    with orm():
        assert not Membership.objects.filter(user=stranger).exists()

    page_a.reload()
    row = member_row(page_a, invitee.email)
    assert row.locator("[data-role]").inner_text().strip().lower() == "member"
    row.locator("select[name=role]").select_option("viewer")
    row.locator("button:has-text('Change role')").click()
    page_a.wait_for_selector(f"text={invitee.email} is now viewer.")
    assert member_row(page_a, invitee.email).locator("[data-role]").inner_text().strip().lower() == "viewer"
    shots(page_a, "4-owner-made-viewer")
    with orm():
        assert Membership.objects.get(user=invitee).role == "viewer"

    # Create: save into the team and bill it; its wallet is empty, so the form says so (402).
    page_a.click("nav >> text=Create")
    page_a.wait_for_url("**/create/")
    page_a.select_option("select[name=save_to]", label="Night Shift")
    page_a.check("input[name=bill_team]")
    page_a.wait_for_selector("text=team credits you may use: 0")
    page_a.fill("textarea[name=prompt]", "a lighthouse for the team")
    page_a.click("button:has-text('Generate')")
    page_a.wait_for_selector("#create-form .form-errors")
    assert "credits" in page_a.locator("#create-form .form-errors").inner_text()
    assert page_a.locator("select[name=save_to] option:checked").inner_text() == "Night Shift"
    shots(page_a, "5-create-billed-to-an-empty-team", full_page=False)
    page_a.locator("#create-destination").scroll_into_view_if_needed()
    shots(page_a, "5b-create-destination", full_page=False)
    with orm():
        assert not Job.objects.filter(user=owner).exists()

    with orm():
        make_team_images(Team.objects.get(name="Night Shift"), owner, 3)
    page_b.click("text=Team gallery")
    page_b.wait_for_url("**/gallery/")
    assert page_b.locator("[data-gallery-tile]").count() == 3
    assert page_b.locator("[data-image-owner]").first.inner_text() == owner.email
    assert page_b.locator("text=Create into").count() == 0  # viewers only look
    assert page_b.locator("[data-delete-image]").count() == 0
    shots(page_b, "5c-viewer-team-gallery", full_page=False)
    page_b.set_viewport_size(PHONE)
    page_b.goto(page_b.url.replace("/gallery/", "/"))
    shots(page_b, "6-viewer-team-page-phone")

    page_a.click("nav >> text=Teams")
    assert page_a.locator(".team-list-item").inner_text().count("Night Shift") == 1
    shots(page_a, "6b-owner-team-list", full_page=False)
    page_a.set_viewport_size(PHONE)
    page_a.goto(team_url)
    shots(page_a, "7-owner-team-page-phone")
    assert [error for error in session_a.console_errors if "402 (Payment Required)" not in error] == []
    assert session_b.console_errors == []
    assert [error for error in session_c.console_errors if "410 (Gone)" not in error] == []  # the used link


def test_owner_tops_up_and_caps_a_member_who_sees_their_own_use(signed_in, shots):
    owner_session, page, owner = signed_in(credits=500)
    member_session, member_page, member = signed_in(credits=0, viewport=PHONE)
    with orm():
        team = make_team(owner, name="Lighthouse Studio", members={member: TeamRole.MEMBER})
    url = f"/billing/teams/{team.pk}/"

    page.goto(url)
    page.fill("#team-transfer input[name=amount]", "600")
    page.click("#team-transfer button[type=submit]")
    page.locator("#team-transfer .errorlist").wait_for()
    assert "You have only 500 credits available to move." in page.locator("#team-transfer").inner_text()
    shots(page, "1-desktop-too-much")

    page.fill("#team-transfer input[name=amount]", "120")
    page.click("#team-transfer button[type=submit]")
    page.locator(".message-success").wait_for()
    assert "Moved 120 credits" in page.locator(".messages").inner_text()
    assert page.locator("#team-balance .balance-big").first.inner_text() == "120"
    with orm():
        assert team_wallet_balance(team_id=team.pk) == (120, 0)

    row = page.locator("#member-caps tr", has_text=member.email)
    row.locator("input[type=number]").fill("40")
    row.locator("button:has-text('Save')").click()
    page.locator(".message-success").wait_for()
    assert "may now use 40 credits a month" in page.locator(".messages").inner_text()
    with orm():
        job = make_job(member)
        credits_reserve(user=member, subject=job.subject, amount=12, team=team)
    page.reload()
    assert "12 of 40" in page.locator("#member-caps").inner_text()
    assert "Transfer in" in page.locator("#credit-history").inner_text()
    shots(page, "2-desktop-owner")

    owner_phone = owner_session.context.new_page()
    owner_phone.set_viewport_size(PHONE)
    owner_phone.goto(url)
    shots(owner_phone, "3-phone-owner")
    owner_phone.close()

    member_page.goto(url)
    text = member_page.locator("main").inner_text()
    assert "Your monthly limit on these credits: 40" in text
    assert "Move credits" not in text and owner.email not in text
    assert "12" in member_page.locator("#team-usage").inner_text()
    shots(member_page, "4-phone-member")
    # The refused transfer's page came back as a 400 (as it should); Chromium logs that, nothing else.
    assert [e for e in owner_session.console_errors if "status of 400" not in e] == []
    assert member_session.console_errors == []


# --- Live team gallery ------------------------------------------------------------------------------

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
