"""The gallery in Chromium on the live stack: scroll loads more, search narrows, favourite,
delete with the browser's confirm. Screenshots on a desktop and a phone."""

from __future__ import annotations

import io

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image as PILImage

from generation.models import Image, Job, JobState
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
