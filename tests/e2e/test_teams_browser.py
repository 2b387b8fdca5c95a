"""Teams in Chromium on the live stack: A creates a team from the nav, invites B by email (the link
comes from the real mail backend's file), B accepts in a second browser, A makes B a viewer;
a used link tells a third person so. Screenshots on a desktop and a phone."""

from __future__ import annotations

import io
import re

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image as PILImage

from accounts.models import Membership, Team
from generation.models import Image, Job, JobState
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
