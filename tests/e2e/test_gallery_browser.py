"""The gallery in Chromium on the live stack: scroll loads more, search narrows, favourite,
delete with the browser's confirm. Screenshots on a desktop and a phone.

Public links: the owner makes a link on the image page, an anonymous browser (its own context, no
cookies) opens it and sees the image, the owner revokes it, and the anonymous reload is a 404. Then a
report from the anonymous browser and the staff queue.

The module's tests share one live stack and the session's browser."""

from __future__ import annotations

import io

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image as PILImage

from generation.models import Image, Job, JobState, ModerationAction, Report, ShareLink
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

DESKTOP = {"width": 1280, "height": 800}
IMAGES = 30  # more than one page (24)
TILES = "[data-gallery-tile]"


def _encoded(color: tuple[int, int, int], kind: str, size: int) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (size, size), color).save(buffer, kind)
    return buffer.getvalue()


def make_gallery(user, count: int) -> list[Image]:
    """`count` finished one-image jobs with real files; every third prompt mentions a lighthouse."""
    images = []
    for number in range(count):
        prompt = f"study {number}: " + ("a lighthouse in a storm" if number % 3 == 0 else "a quiet meadow")
        job = Job.objects.create(
            user=user, state=JobState.SUCCEEDED, prompt=prompt, width=64, height=64, steps=4,
            guidance_scale=7, sampler="euler", seed=number, num_images=1, model_name="test", cost=1,
        )
        color = (40 + number * 7 % 200, 90 + number * 13 % 160, 200 - number * 5 % 150)
        png = default_storage.save(f"images/{user.pk}/{job.pk}/0.png", ContentFile(_encoded(color, "PNG", 64)))
        webp = default_storage.save(f"images/{user.pk}/{job.pk}/0.webp", ContentFile(_encoded(color, "WEBP", 64)))
        images.append(Image.objects.create(job=job, owner=user, index=0, seed=number, width=64, height=64,
                                           file=png, thumbnail=webp, infotext="x"))
    return images


def test_gallery_scrolls_searches_favourites_and_deletes(signed_in, browser_session_factory, shots):
    session, page, user = signed_in(viewport=DESKTOP)
    with orm():
        make_gallery(user, IMAGES)

    page.goto("/")
    page.click("nav >> text=My images")
    page.wait_for_url("**/gallery/")
    assert page.locator(TILES).count() == 24
    shots(page, "1-desktop-first-page", full_page=False)

    page.locator("[data-gallery-more]").scroll_into_view_if_needed()
    page.wait_for_function(f"() => document.querySelectorAll('{TILES}').length === {IMAGES}")
    assert page.locator("[data-gallery-more]").count() == 0
    ids = page.locator(TILES).evaluate_all("tiles => tiles.map(tile => tile.id)")
    assert len(set(ids)) == IMAGES

    page.fill("input[name=q]", "Lighthouse STORM")
    page.click("button:has-text('Search')")
    page.wait_for_url("**/gallery/?q=Lighthouse+STORM*")
    captions = page.locator(".gallery-caption").all_inner_texts()
    assert len(captions) == 10 and all("lighthouse in a storm" in caption for caption in captions)

    first = page.locator(TILES).first
    first_id = first.get_attribute("id").removeprefix("image-")
    first.locator("[data-favourite-toggle]").click()
    page.locator(f"#image-{first_id} [data-favourite-toggle][aria-pressed=true]").wait_for()
    with orm():
        assert Image.objects.get(pk=first_id).favourite is True
    shots(page, "2-desktop-search-favourite")

    second = page.locator(TILES).nth(1)
    second_id = second.get_attribute("id").removeprefix("image-")
    with orm():
        files = [Image.objects.get(pk=second_id).file.name, Image.objects.get(pk=second_id).thumbnail.name]
    messages = []
    page.once("dialog", lambda dialog: (messages.append(dialog.message), dialog.accept()))
    second.locator("[data-delete-image]").click()
    page.locator(f"#image-{second_id}").wait_for(state="detached")
    assert messages == ["Delete this image? This cannot be undone."]
    assert page.locator(TILES).count() == 9
    with orm():
        assert not Image.objects.filter(pk=second_id).exists()
        assert not any(default_storage.exists(name) for name in files)
    assert page.request.get(f"/images/{second_id}/thumbnail.webp").status == 404

    page.goto("/gallery/?favourites=on")
    assert page.locator(TILES).evaluate_all("tiles => tiles.map(tile => tile.id)") == [f"image-{first_id}"]
    assert not session.console_errors, session.console_errors

    phone_session = browser_session_factory(viewport=PHONE)
    phone_session.context.add_cookies(session.context.cookies())  # the same user, on a phone
    phone = phone_session.page
    phone.goto("/gallery/")
    assert phone.locator(TILES).count() == 24
    shots(phone, "3-phone-first-page", full_page=False)
    phone.goto(f"/images/{first_id}/")
    shots(phone, "4-phone-image-page")
    phone.click("[data-delete-image]")  # no JavaScript confirm on the image page: the confirmation page
    phone.wait_for_url(f"**/images/{first_id}/delete/")
    shots(phone, "5-phone-confirm-delete")
    phone.click("[data-confirm-delete]")
    phone.wait_for_url("**/gallery/")
    assert phone.locator(f"#image-{first_id}").count() == 0
    with orm():
        assert Image.objects.count() == IMAGES - 2
    assert not phone_session.console_errors, phone_session.console_errors


# --- Public links --------------------------------------------------------------------------------

SHARING_DESKTOP = {"width": 1280, "height": 860}
PROMPT = "a lighthouse in a storm"


def image_loaded(page, selector: str) -> bool:
    return page.locator(selector).evaluate("img => img.complete && img.naturalWidth > 0")


def test_owner_shares_anonymous_opens_owner_revokes_anonymous_gets_404(signed_in, browser_session_factory,
                                                                       shots):
    session, page, user = signed_in(viewport=SHARING_DESKTOP)
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

    visitor_session = browser_session_factory(viewport=SHARING_DESKTOP)  # no cookies: anonymous
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
    session, page, user = signed_in(viewport=SHARING_DESKTOP)
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
