"""The gallery's selection in Chromium on the live stack: click and shift-click to select a range
(across a page htmx loaded while scrolling), add the selection to a new collection, download the
collection as one zip (its contents checked), delete a selection after the confirmation page; the
image page's collection panel. Screenshots on a desktop and a phone."""

from __future__ import annotations

import zipfile

import pytest
from django.core.files.storage import default_storage

from generation.models import Collection, Image
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
from tests.e2e.test_gallery_browser import make_gallery

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

DESKTOP = {"width": 1280, "height": 800}
TILES = "[data-gallery-tile]"
BOXES = "[data-select-image]"


def tile_ids(page) -> list[str]:
    return [tile_id.removeprefix("image-") for tile_id in
            page.locator(TILES).evaluate_all("tiles => tiles.map(tile => tile.id)")]


def checked_ids(page) -> list[str]:
    return page.locator(f"{BOXES}:checked").evaluate_all("boxes => boxes.map(box => box.value)")


def test_select_with_click_and_shift_click_add_to_collection_zip_and_delete(
    signed_in, browser_session_factory, shots, tmp_path,  # noqa: F811 (fixtures)
):
    session, page, user = signed_in(viewport=DESKTOP)
    with orm():
        make_gallery(user, 30)

    page.goto("/gallery/")
    ids = tile_ids(page)
    assert len(ids) == 24
    count = page.locator("[data-selected-count]")
    assert page.locator("[data-bulk-action=zip]").is_disabled()  # nothing selected yet

    # Click one, shift-click the fifth after it: the five between are selected.
    page.locator(BOXES).nth(2).click()
    page.locator(BOXES).nth(6).click(modifiers=["Shift"])
    assert checked_ids(page) == ids[2:7]
    assert count.inner_text() == "5 selected"
    # Shift-click on an earlier one with the box unticked clears that range again.
    page.locator(BOXES).nth(4).click()  # unticks the 5th tile, becomes the anchor
    page.locator(BOXES).nth(6).click(modifiers=["Shift"])  # 6 now unticked: range 4..6 cleared
    assert checked_ids(page) == ids[2:4]
    page.locator(BOXES).nth(3).click()  # untick: one left
    page.locator(BOXES).nth(6).click(modifiers=["Shift"])  # anchor 3 (unticked) .. 6 -> ticked
    assert checked_ids(page) == [ids[2], *ids[3:7]]
    assert page.locator("[data-gallery-tile].is-selected").count() == 5
    shots(page, "1-desktop-five-selected", full_page=False)

    # Scroll: the next page arrives by htmx and its tiles join the same selection (shift-click across pages).
    page.locator("[data-gallery-more]").scroll_into_view_if_needed()
    page.wait_for_function(f"() => document.querySelectorAll('{TILES}').length === 30")
    all_ids = tile_ids(page)
    page.locator(BOXES).nth(20).click()
    page.locator(BOXES).nth(27).click(modifiers=["Shift"])
    assert checked_ids(page) == [*ids[2:7], *all_ids[20:28]]
    assert count.inner_text() == "13 selected"
    # While something is selected, a click on a thumbnail selects it instead of opening the image.
    page.locator(".gallery-thumb").nth(29).click()
    assert page.url.endswith("/gallery/") and count.inner_text() == "14 selected"
    assert page.locator(BOXES).nth(29).is_checked()
    assert page.locator("[data-select-none]").is_visible()
    page.keyboard.press("Escape")
    assert checked_ids(page) == []
    assert page.locator("[data-select-none]").is_hidden() and page.locator("[data-select-all]").is_visible()
    page.evaluate("() => window.scrollTo(0, 0)")

    # Select five again and add them to a new collection.
    page.locator(BOXES).nth(0).click()
    page.locator(BOXES).nth(4).click(modifiers=["Shift"])
    chosen = all_ids[0:5]
    page.fill("input[name=new_collection]", "Harbour picks")
    page.click("[data-bulk-action=collection]")
    page.wait_for_url("**/gallery/")
    assert "Added 5 images to “Harbour picks”." in page.locator(".messages").inner_text()
    with orm():
        collection = Collection.objects.get(name="Harbour picks")
        assert sorted(str(pk) for pk in collection.images.values_list("pk", flat=True)) == sorted(chosen)
        files = {str(image.pk): image for image in collection.images.all()}

    # The collection's page shows exactly those; select all and download them as one zip.
    page.goto("/collections/")
    page.click("text=Harbour picks")
    page.wait_for_url(f"**/collections/{collection.pk}/")
    assert sorted(tile_ids(page)) == sorted(chosen)
    page.click("[data-select-all]")
    assert count.inner_text() == "5 selected"
    shots(page, "2-desktop-collection-all-selected")
    with page.expect_download() as download_info:
        page.click("[data-bulk-action=zip]")
    download = download_info.value
    assert download.suggested_filename.endswith("-5-images.zip")
    saved = tmp_path / "selection.zip"
    download.save_as(saved)
    with zipfile.ZipFile(saved) as archive, orm():
        assert archive.testzip() is None
        names = sorted(archive.namelist())
        expected = {f"studio-{image.seed}-{image_id[:8]}.png": image for image_id, image in files.items()}
        assert names == sorted(expected)
        for name, image in expected.items():
            with default_storage.open(image.file.name, "rb") as handle:
                assert archive.read(name) == handle.read()

    # Back in the gallery: select two and delete them, after the confirmation page.
    page.goto("/gallery/")
    page.locator(BOXES).nth(0).click()
    page.locator(BOXES).nth(1).click(modifiers=["Shift"])
    doomed = tile_ids(page)[0:2]
    with orm():
        doomed_files = [name for image in Image.objects.filter(pk__in=doomed)
                        for name in (image.file.name, image.thumbnail.name)]
    page.click("[data-bulk-action=delete]")
    page.wait_for_url("**/gallery/bulk/")
    assert page.locator("h1").inner_text() == "Delete 2 images?"
    assert page.locator(".bulk-confirm-grid img").count() == 2
    with orm():
        assert Image.objects.count() == 30  # nothing deleted before the confirmation
    shots(page, "3-desktop-confirm-delete")
    page.click("[data-confirm-bulk-delete]")
    page.wait_for_url("**/gallery/")
    assert "Deleted 2 images." in page.locator(".messages").inner_text()
    assert not set(doomed) & set(tile_ids(page))
    with orm():
        assert Image.objects.count() == 28 and not Image.objects.filter(pk__in=doomed).exists()
        assert not any(default_storage.exists(name) for name in doomed_files)
        assert collection.images.count() == 3  # the deleted ones left the collection too
    assert page.request.get(f"/images/{doomed[0]}/original.png").status == 404
    assert not session.console_errors, session.console_errors

    # A phone: the bulk bar with a selection, and the image page's collection and gallery panels.
    phone_session = browser_session_factory(viewport=PHONE)
    phone_session.context.add_cookies(session.context.cookies())
    phone = phone_session.page
    phone.goto("/gallery/")
    phone.locator(BOXES).nth(0).click()
    phone.locator(BOXES).nth(3).click(modifiers=["Shift"])
    assert phone.locator("[data-selected-count]").inner_text() == "4 selected"
    phone.wait_for_function("() => [...document.querySelectorAll('.gallery-thumb img')].slice(0, 4)"
                            ".every(img => img.complete && img.naturalWidth > 0)")
    shots(phone, "4-phone-selection", full_page=False)
    kept = chosen[2]
    phone.goto(f"/images/{kept}/")
    phone.fill("#new-collection-name", "Phone board")
    phone.click("[data-add-to-collection]")
    phone.locator("#image-collections a:has-text('Phone board')").wait_for()
    assert phone.url.endswith(f"/images/{kept}/")  # htmx swapped the panel in place
    with orm():
        assert Collection.objects.get(name="Phone board").images.filter(pk=kept).exists()
    assert phone.locator("#image-collections .chip").all_inner_texts()[0].startswith("Harbour picks")
    phone.locator(".chip:has-text('Phone board') [data-remove-from-collection]").click()
    phone.locator("#image-collections [role=status]:has-text('Removed from')").wait_for()
    assert phone.locator("#image-collections a:has-text('Phone board')").count() == 0
    assert phone.locator("#image-collections a:has-text('Harbour picks')").count() == 1
    # (after the htmx swaps: a screenshot leaves style="" on inputs, which htmx's settle would copy)
    shots(phone, "5-phone-image-panels")
    phone.goto("/collections/")
    shots(phone, "6-phone-collections")
    assert not phone_session.console_errors, phone_session.console_errors


def test_without_javascript_the_bulk_bar_is_a_plain_form(signed_in, browser, live_stack, shots):  # noqa: F811
    session, _, user = signed_in(viewport=DESKTOP)
    with orm():
        images = make_gallery(user, 6)
        board = Collection.objects.create(name="Keepers", owner_user=user, created_by=user)
    context = browser.new_context(base_url=live_stack.base_url, viewport=DESKTOP, java_script_enabled=False)
    try:
        context.add_cookies(session.context.cookies())
        page = context.new_page()
        page.goto("/gallery/")
        assert page.locator("[data-select-all]").is_hidden()  # needs the script: not offered without it
        newest = [str(image.pk) for image in reversed(images)]
        page.check(f"{BOXES}[value='{newest[0]}']")
        page.check(f"{BOXES}[value='{newest[1]}']")
        page.select_option("#bulk-collection", str(board.pk))
        shots(page, "nojs-1-ticked", full_page=False)
        page.click("[data-bulk-action=collection]")
        page.wait_for_url("**/gallery/")
        assert "Added 2 images to “Keepers”." in page.locator(".messages").inner_text()
        with orm():
            assert sorted(str(pk) for pk in board.images.values_list("pk", flat=True)) == sorted(newest[:2])

        page.check(f"{BOXES}[value='{newest[2]}']")
        page.click("[data-bulk-action=delete]")
        page.wait_for_url("**/gallery/bulk/")
        assert page.locator("h1").inner_text() == "Delete 1 image?"
        page.click("[data-confirm-bulk-delete]")
        page.wait_for_url("**/gallery/")
        with orm():
            assert Image.objects.count() == 5 and not Image.objects.filter(pk=newest[2]).exists()
    finally:
        context.close()


def test_the_image_page_moves_an_image_into_a_team_gallery_and_back(signed_in, shots):  # noqa: F811
    from accounts.models import Membership, Team, TeamRole

    session, page, user = signed_in(viewport=DESKTOP)
    with orm():
        image = make_gallery(user, 1)[0]
        team = Team.objects.create(name="Night Shift", created_by=user)
        Membership.objects.create(team=team, user=user, role=TeamRole.OWNER)
        watching = Team.objects.create(name="Watchers")
        Membership.objects.create(team=watching, user=user, role=TeamRole.VIEWER)
    page.goto(f"/images/{image.pk}/")
    assert page.locator("[data-image-owner]").first.inner_text() == "you"
    assert page.locator("#move-to-team option").all_inner_texts() == ["Night Shift"]  # not where I only view
    page.click("[data-move-to-team]")
    page.wait_for_url(f"**/images/{image.pk}/")
    assert page.locator("[data-image-team-name]").inner_text() == "Night Shift"
    with orm():
        image.refresh_from_db()
        assert image.team_id == team.pk
    shots(page, "1-desktop-in-team-gallery")
    page.goto("/gallery/")  # still in my own gallery too
    assert page.locator(f"#image-{image.pk}").count() == 1
    page.goto(f"/images/{image.pk}/")
    page.click("[data-remove-from-team]")
    page.wait_for_url(f"**/images/{image.pk}/")
    assert "own gallery only" in page.locator("[data-image-team]").inner_text()
    with orm():
        image.refresh_from_db()
        assert image.team_id is None
    assert not session.console_errors, session.console_errors
