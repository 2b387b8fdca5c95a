"""Bulk actions on the gallery's selection: add to a collection, share into a team, download one
streamed zip, delete after a confirmation page. Every image is checked with visible_to and a
permission per image; bad input is a 400 with a message; the plain form works without JavaScript."""

from __future__ import annotations

import asyncio
import io
import re
import zipfile

import pytest
from django.core.files.storage import default_storage
from django.urls import reverse

from accounts.models import TeamRole
from generation import services
from generation.bulk_views import _chunks_async
from generation.models import Collection, CollectionItem, Image
from generation.services.bulk import zip_entry_name
from generation.services.collections import collection_create
from tests.factories import make_user
from tests.generation.test_collections import images_of, make_team, signed_in

pytestmark = [pytest.mark.django_db]

BULK = reverse("generation:bulk_action")
GALLERY = reverse("generation:gallery")


def post(client, action: str, images, **data):
    return client.post(BULK, {"action": action, "images": [str(getattr(i, "pk", i)) for i in images],
                              "next": GALLERY, **data})


def messages_of(response) -> list[str]:
    return [str(message) for message in response.wsgi_request._messages]


# --- The bar on the page ------------------------------------------------------------------------

def test_the_gallery_has_the_bulk_form_and_a_box_per_tile_that_belongs_to_it(client):
    user = make_user()
    images = images_of(user, 3)
    html = signed_in(client, user).get(GALLERY).content.decode()
    assert re.search(r'<form class="bulk-bar card" id="bulk-form" method="post" action="/gallery/bulk/"',
                     html)
    boxes = re.findall(r'<input type="checkbox" name="images" value="([0-9a-f-]{36})" form="bulk-form"', html)
    assert sorted(boxes) == sorted(str(image.pk) for image in images)
    for action in ("collection", "zip", "delete"):
        assert f'name="action" value="{action}"' in html
    assert 'value="team"' not in html  # no team to share into: no team control
    assert "<script>" not in html and " onclick=" not in html and " style=" not in html


def test_next_pages_loaded_by_htmx_carry_boxes_for_the_same_form(client):
    user = make_user()
    images_of(user, 4)
    for _ in range(7):
        images_of(user, 4)
    first = signed_in(client, user).get(GALLERY).content.decode()
    next_url = re.search(r'hx-get="([^"]+)" hx-trigger="revealed"', first).group(1).replace("&amp;", "&")
    fragment = client.get(next_url, HTTP_HX_REQUEST="true").content.decode()
    assert fragment.count('form="bulk-form"') == 8 and "bulk-bar" not in fragment


# --- Add to a collection ------------------------------------------------------------------------

def test_add_the_selection_to_a_collection_and_to_a_new_one(client):
    user = make_user()
    images = images_of(user, 3)
    board = collection_create(name="Board", created_by=user)
    signed_in(client, user)
    response = post(client, "collection", images[:2], collection=str(board.pk))
    assert response.status_code == 302 and response["Location"] == GALLERY
    assert set(board.images.all()) == set(images[:2])
    assert messages_of(response) == ["Added 2 images to “Board”."]
    response = post(client, "collection", images, collection=str(board.pk), new_collection="Fresh picks")
    fresh = Collection.objects.get(name="Fresh picks")  # a new name wins over the chosen one
    assert set(fresh.images.all()) == set(images) and board.images.count() == 2


def test_images_that_are_not_mine_are_refused_and_never_added(client):
    user, other = make_user(), make_user()
    mine = images_of(user, 2)
    theirs = images_of(other, 1)
    board = collection_create(name="Board", created_by=user)
    response = post(signed_in(client, user), "collection", [*mine, *theirs], collection=str(board.pk))
    assert response.status_code == 302
    assert set(board.images.all()) == set(mine)
    response = post(client, "collection", theirs, collection=str(board.pk))
    assert response.status_code == 404 and "None of the selected images exist" in response.content.decode()


def test_a_team_collection_takes_only_the_teams_images_from_a_mixed_selection(client):
    owner, member = make_user(), make_user()
    team = make_team(owner, (member, TeamRole.MEMBER))
    board = collection_create(name="Team board", created_by=member, team_id=team.pk)
    in_team, personal = images_of(member, 2)
    services.image_move_to_team(image=in_team, team_id=team.pk, user=member)
    response = post(signed_in(client, member), "collection", [in_team, personal], collection=str(board.pk))
    assert list(board.images.all()) == [in_team]
    assert messages_of(response) == [
        "Added 1 image to “Team board”. 1 could not be: they are not yours to change there."]


def test_a_viewer_cannot_add_to_the_team_collection_nor_pick_a_strangers_collection(client):
    owner, viewer = make_user(), make_user()
    team = make_team(owner, (viewer, TeamRole.VIEWER))
    board = collection_create(name="Team board", created_by=owner, team_id=team.pk)
    image = images_of(owner)[0]
    services.image_move_to_team(image=image, team_id=team.pk, user=owner)
    response = post(signed_in(client, viewer), "collection", [image], collection=str(board.pk))
    assert response.status_code == 400
    assert "You cannot add images to this collection." in response.content.decode()
    strangers = collection_create(name="Theirs", created_by=make_user())
    response = post(client, "collection", [image], collection=str(strangers.pk))
    assert response.status_code == 400
    assert "Choose a collection, or name a new one." in response.content.decode()
    assert not CollectionItem.objects.exists()


# --- Share into a team --------------------------------------------------------------------------

def test_share_the_selection_into_a_team_gallery(client):
    owner, member = make_user(), make_user()
    team = make_team(owner, (member, TeamRole.MEMBER), name="Makers")
    mine = images_of(member, 2)
    teammates = images_of(owner, 1)
    services.image_move_to_team(image=teammates[0], team_id=team.pk, user=owner)
    signed_in(client, member)
    html = client.get(GALLERY).content.decode()
    assert f'<option value="{team.pk}">Makers</option>' in html
    response = post(client, "team", [*mine, *teammates], team=str(team.pk))
    assert response.status_code == 302
    assert set(Image.objects.filter(team=team)) == {*mine, *teammates}
    assert all(image.owner == member for image in Image.objects.filter(pk__in=[i.pk for i in mine]))
    note = messages_of(response)[0]
    assert note.startswith("Shared 2 images into Makers") and "1 could not be" in note


def test_sharing_into_a_team_where_i_only_view_or_am_not_a_member_is_a_400(client):
    owner, viewer = make_user(), make_user()
    watching = make_team(owner, (viewer, TeamRole.VIEWER))
    foreign = make_team(make_user())
    image = images_of(viewer)[0]
    signed_in(client, viewer)
    for team in (watching, foreign):
        response = post(client, "team", [image], team=str(team.pk))
        assert response.status_code == 400 and "Choose one of your teams." in response.content.decode()
    image.refresh_from_db()
    assert image.team is None


# --- The zip ------------------------------------------------------------------------------------

def zip_of(response) -> zipfile.ZipFile:
    assert response.streaming  # never built as one response body
    return zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))


def test_the_zip_holds_the_original_pngs_of_the_visible_selection_only(client):
    user, other = make_user(), make_user()
    mine = images_of(user, 3)
    theirs = images_of(other, 1)
    response = post(signed_in(client, user), "zip", [*mine, *theirs])
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"].startswith('attachment; filename="studio-')
    archive = zip_of(response)
    assert sorted(archive.namelist()) == sorted(zip_entry_name(image) for image in mine)
    for image in mine:
        with default_storage.open(image.file.name, "rb") as handle:
            assert archive.read(zip_entry_name(image)) == handle.read()
    assert archive.testzip() is None


def test_the_zip_content_length_is_exact(client):
    user = make_user()
    images = images_of(user, 2)
    response = post(signed_in(client, user), "zip", images)
    body = b"".join(response.streaming_content)
    assert int(response["Content-Length"]) == len(body)


def test_a_teammate_zips_team_images_but_a_removed_member_gets_nothing(client):
    owner, member = make_user(), make_user()
    team = make_team(owner, (member, TeamRole.VIEWER))
    image = images_of(owner)[0]
    services.image_move_to_team(image=image, team_id=team.pk, user=owner)
    assert zip_of(post(signed_in(client, member), "zip", [image])).namelist() == [zip_entry_name(image)]
    team.memberships.filter(user=member).delete()
    assert post(client, "zip", [image]).status_code == 404


def test_the_zip_has_a_cap(client, settings):
    settings.STUDIO_ZIP_MAX_IMAGES = 2
    user = make_user()
    images = images_of(user, 3)
    response = post(signed_in(client, user), "zip", images)
    assert response.status_code == 400 and "A zip holds at most 2 images" in response.content.decode()
    assert response.get("Content-Type", "").startswith("text/html")


def test_a_missing_file_is_left_out_and_none_at_all_is_a_400(client):
    user = make_user()
    kept, lost = images_of(user, 2)
    default_storage.delete(lost.file.name)
    assert zip_of(post(signed_in(client, user), "zip", [kept, lost])).namelist() == [zip_entry_name(kept)]
    default_storage.delete(kept.file.name)
    response = post(client, "zip", [kept, lost])
    assert response.status_code == 400 and "could be found" in response.content.decode()


def test_the_zip_reads_files_only_while_it_is_sent(client, monkeypatch):
    """Nothing is read when the response is made; the body is produced chunk by chunk."""
    user = make_user()
    images = images_of(user, 2)
    opened = []
    real_open = default_storage.open

    def recording_open(name, mode="rb"):
        opened.append(name)
        return real_open(name, mode)

    monkeypatch.setattr(default_storage, "open", recording_open)
    response = post(signed_in(client, user), "zip", images)
    assert opened == []
    chunks = iter(response.streaming_content)
    next(chunks)
    assert len(opened) <= 1
    list(chunks)
    assert sorted(opened) == sorted(image.file.name for image in images)


def test_under_asgi_the_zip_is_pulled_a_chunk_at_a_time_not_listed_first():
    pulled = []

    def source():
        for number in range(3):
            pulled.append(number)
            yield bytes([number])

    async def first_two():
        stream = _chunks_async(source())
        got = [await stream.__anext__(), await stream.__anext__()]
        return got, list(pulled)

    got, pulled_then = asyncio.run(first_two())
    assert got == [b"\x00", b"\x01"] and pulled_then == [0, 1]


# --- Delete -------------------------------------------------------------------------------------

def test_delete_shows_a_confirmation_page_first_then_deletes_rows_and_files(
    client, django_capture_on_commit_callbacks,
):
    user = make_user()
    images = images_of(user, 3)
    doomed = images[:2]
    signed_in(client, user)
    page = post(client, "delete", doomed)
    html = page.content.decode()
    assert page.status_code == 200 and "Delete 2 images?" in html
    assert Image.objects.count() == 3  # nothing deleted yet
    confirm = re.findall(r'<input type="hidden" name="images" value="([0-9a-f-]{36})">', html)
    assert sorted(confirm) == sorted(str(image.pk) for image in doomed)
    files = [name for image in doomed for name in (image.file.name, image.thumbnail.name)]
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, "delete", doomed, confirm="yes")
    assert response.status_code == 302 and messages_of(response) == ["Deleted 2 images."]
    assert list(Image.objects.all()) == [images[2]]
    assert not any(default_storage.exists(name) for name in files)
    assert client.get(reverse("generation:image_thumbnail", args=[doomed[0].pk])).status_code == 404


def test_delete_spares_what_the_user_may_not_delete(client):
    owner, member = make_user(), make_user()
    team = make_team(owner, (member, TeamRole.MEMBER))
    teammates = images_of(owner)[0]
    services.image_move_to_team(image=teammates, team_id=team.pk, user=owner)
    mine = images_of(member)[0]
    response = post(signed_in(client, member), "delete", [mine, teammates], confirm="yes")
    assert response.status_code == 302 and "1 could not be" in messages_of(response)[0]
    assert list(Image.objects.all()) == [teammates]


def test_a_team_admin_deletes_team_images_in_bulk(client):
    owner, admin = make_user(), make_user()
    team = make_team(owner, (admin, TeamRole.ADMIN))
    image = images_of(owner)[0]
    services.image_move_to_team(image=image, team_id=team.pk, user=owner)
    assert post(signed_in(client, admin), "delete", [image], confirm="yes").status_code == 302
    assert not Image.objects.exists()


# --- Bad input ----------------------------------------------------------------------------------

@pytest.mark.database
@pytest.mark.parametrize("data, message", [
    ({"action": "zip"}, "Select at least one image first."),
    ({"action": "zip", "images": ["not-an-id"]}, "not an image id"),
    ({"action": "explode", "images": ["00000000-0000-0000-0000-000000000000"]}, "Choose what to do"),
    ({"images": ["00000000-0000-0000-0000-000000000000"]}, "Choose what to do"),
    ({"action": "collection", "images": ["SELF"]}, "Choose a collection, or name a new one."),
    ({"action": "collection", "images": ["SELF"], "collection": "junk"}, "Choose a collection"),
    ({"action": "collection", "images": ["SELF"], "new_collection": "x" * 101}, "at most 100 characters"),
    ({"action": "team", "images": ["SELF"]}, "Choose one of your teams."),
])
def test_bad_input_is_a_400_with_a_message_and_changes_nothing(client, data, message):
    user = make_user()
    image = images_of(user)[0]
    data = {key: [str(image.pk) if v == "SELF" else v for v in value] if isinstance(value, list) else value
            for key, value in data.items()}
    response = signed_in(client, user).post(BULK, data)
    assert response.status_code == 400 and message in response.content.decode()
    assert Image.objects.filter(pk=image.pk, team=None).exists() and not CollectionItem.objects.exists()


def test_the_selection_has_a_cap(client, settings):
    settings.STUDIO_BULK_MAX_IMAGES = 2
    user = make_user()
    images = images_of(user, 3)
    response = post(signed_in(client, user), "delete", images, confirm="yes")
    assert response.status_code == 400 and "at most 2 images" in response.content.decode()
    assert Image.objects.count() == 3


def test_anonymous_and_get_are_refused(client):
    image = images_of(make_user())[0]
    response = post(client, "zip", [image])
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    signed_in(client, make_user())
    assert client.get(BULK).status_code == 405


def test_next_must_be_our_own_page(client):
    user = make_user()
    image = images_of(user)[0]
    board = collection_create(name="Board", created_by=user)
    response = signed_in(client, user).post(BULK, {"action": "collection", "images": [str(image.pk)],
                                                   "collection": str(board.pk), "next": "https://evil.example/"})
    assert response.status_code == 302 and response["Location"] == GALLERY
