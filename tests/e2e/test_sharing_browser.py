"""Public links in Chromium on the live stack: the owner makes a link on the image page, an
anonymous browser (its own context, no cookies) opens it and sees the image, the owner revokes it,
and the anonymous reload is a 404. Then a report from the anonymous browser and the staff queue."""

from __future__ import annotations

import pytest

from generation.models import ModerationAction, Report, ShareLink
from tests.e2e.browser_fixtures import (  # noqa: F401  (fixtures)
    PHONE,
    _fresh_redis_state,
    browser,
    browser_session_factory,
    live_stack,
    orm,
    shared_live_stack,
    shots,
    signed_in,
)
from tests.generation.sharing_support import make_collection, make_image

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

DESKTOP = {"width": 1280, "height": 860}
PROMPT = "a lighthouse in a storm"


def image_loaded(page, selector: str) -> bool:
    return page.locator(selector).evaluate("img => img.complete && img.naturalWidth > 0")


def test_owner_shares_anonymous_opens_owner_revokes_anonymous_gets_404(signed_in, browser_session_factory,
                                                                       shots):
    session, page, user = signed_in(viewport=DESKTOP)
    with orm():
        image = make_image(user, prompt=PROMPT, color=(30, 120, 220))

    page.goto(f"/images/{image.pk}/")
    panel = page.locator("[data-share-panel]")
    panel.locator("input[name=show_parameters]").check()
    panel.locator("select[name=expires]").select_option("7d")
    panel.locator("[data-share-create]").click()
    url_field = page.locator("[data-share-url]")
    url_field.wait_for()
    share_url = url_field.input_value()
    with orm():
        link = ShareLink.objects.get()
    assert share_url == f"{session.base_url}/s/{link.token}/" and link.show_parameters
    assert page.locator("[data-copy-target]").is_visible()  # share.js revealed the Copy button
    shots(page, "1-owner-made-a-link")

    visitor_session = browser_session_factory(viewport=DESKTOP)  # no cookies: anonymous
    visitor = visitor_session.page
    response = visitor.goto(share_url)
    assert response.status == 200
    assert response.headers["x-robots-tag"] == "noindex, nofollow"
    assert visitor.locator("meta[property='og:image']").get_attribute("content").startswith(session.base_url)
    assert image_loaded(visitor, "[data-share-image] img.full")
    assert PROMPT in visitor.locator("[data-share-parameters]").inner_text()
    assert visitor.locator("text=Log in").count() == 1  # really signed out
    shots(visitor, "2-anonymous-sees-the-image")

    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("[data-share-revoke]").click()
    page.locator("[data-share-url]").wait_for(state="detached")
    with orm():
        assert ShareLink.objects.get().revoked_at is not None
    shots(page, "3-owner-revoked")

    response = visitor.reload()
    assert response.status == 404
    assert visitor.locator("[data-share-gone]").is_visible()
    file_status = visitor.request.get(f"{share_url}images/{image.pk}/original.png").status
    assert file_status == 404
    shots(visitor, "4-anonymous-reload-is-404")
    assert not session.console_errors, session.console_errors
    assert not [e for e in visitor_session.console_errors if "404" not in e], visitor_session.console_errors


def test_anonymous_report_and_the_staff_queue(signed_in, browser_session_factory, shots):
    session, page, user = signed_in(viewport=DESKTOP)
    with orm():
        images = [make_image(user, prompt=f"storm study {n}", color=(40 * n, 90, 160)) for n in range(1, 5)]
        collection = make_collection(user=user, images=images, name="Storm studies")
    page.goto(f"/collections/{collection.pk}/")
    page.locator("[data-share-details] summary").click()
    page.locator("[data-share-create]").click()
    share_url = page.locator("[data-share-url]").input_value()
    shots(page, "1-collection-link")

    phone_session = browser_session_factory(viewport=PHONE)
    visitor = phone_session.page
    visitor.goto(share_url)
    assert visitor.locator("[data-share-tile]").count() == 4
    visitor.wait_for_function("() => [...document.querySelectorAll('[data-share-tile] img')]"
                              ".every(img => img.complete && img.naturalWidth > 0)")
    assert "storm study" not in visitor.content()  # prompts were not chosen to be shown
    shots(visitor, "2-phone-anonymous-collection")
    visitor.click("[data-share-report]")
    visitor.check("input[value=spam]")
    visitor.fill("textarea[name=details]", "Looks like advertising.")
    shots(visitor, "3-phone-report-form")
    visitor.click("[data-report-submit]")
    visitor.locator("[data-report-thanks]").wait_for()
    shots(visitor, "4-phone-report-thanks")
    with orm():
        report = Report.objects.get()
        assert report.reporter is None and report.details == "Looks like advertising."
        user.is_staff = True  # the same person now reviews it as staff
        user.save(update_fields=["is_staff"])

    page.goto("/gallery/")
    page.click("nav >> text=Reports")
    page.wait_for_url("**/staff/reports/")
    assert page.locator("[data-open-reports]").inner_text() == "1"
    shots(page, "5-staff-queue")
    page.click(f"[data-report-row='{report.pk}'] >> text=Review")
    page.locator("[data-report-image]").first.wait_for()
    assert page.locator("[data-report-image]").count() == 4
    page.wait_for_function("() => [...document.querySelectorAll('[data-report-image] img')]"
                           ".every(img => img.complete && img.naturalWidth > 0)")
    shots(page, "6-staff-report-detail")
    page.check("input[name=action][value=hide_link]")
    page.fill("textarea[name=note]", "advertising")
    page.click("[data-moderation-submit]")
    page.wait_for_url("**/staff/reports/")
    assert page.locator("[data-reports-empty]").is_visible()
    with orm():
        assert ModerationAction.objects.get().kind == "hide_link"
    page.goto("/staff/reports/history/")
    shots(page, "7-staff-history")
    assert visitor.goto(share_url).status == 404
    assert not session.console_errors, session.console_errors
