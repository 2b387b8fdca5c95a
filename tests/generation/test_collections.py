"""Collections (boards): create, rename, delete, add and remove images (an image in several),
a collection's page, the gallery's collection filter, team collections, and the image page's
collection and team-gallery panels. Every forbidden read is a 404, a forbidden action a 403."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from accounts.models import Membership, Team, TeamRole
from generation import permissions, services
from generation.models import Collection, CollectionItem, Image
from generation.services.collections import CollectionError, collection_add_images, collection_create
from tests.factories import make_user
from tests.generation.test_gallery import make_job_with_images, tile_ids

pytestmark = [pytest.mark.django_db]

GALLERY = reverse("generation:gallery")
LIST = reverse("generation:collection_list")


def make_team(owner, *members: tuple, name: str = "Crew") -> Team:
    """A team owned by `owner`, with (user, role) members."""
    team = Team.objects.create(name=name, created_by=owner)
    Membership.objects.create(team=team, user=owner, role=TeamRole.OWNER)
    for user, role in members:
        Membership.objects.create(team=team, user=user, role=role)
    return team


def images_of(user, count: int = 1, **kwargs) -> list[Image]:
    return list(make_job_with_images(user, count=count, **kwargs).images.order_by("index"))


def detail(collection) -> str:
    return reverse("generation:collection_detail", args=[collection.pk])


def signed_in(client, user):
    client.force_login(user)
    return client


# --- Create, rename, delete ---------------------------------------------------------------------

def test_create_a_personal_collection_from_the_list_page_and_see_it_listed(client):
    user = make_user()
    response = signed_in(client, user).post(LIST, {"name": "  Mood   board "})
    collection = Collection.objects.get()
    assert response.status_code == 302 and response["Location"] == detail(collection)
    assert (collection.name, collection.owner_user, collection.owner_team, collection.created_by) == (
        "Mood board", user, None, user)
    page = client.get(LIST).content.decode()
    assert "Mood board" in page and "0 images" in page


@pytest.mark.database
@pytest.mark.parametrize("name, message", [
    ("", "Give the collection a name."),
    ("x" * 101, "at most 100 characters"),
    ("MOOD BOARD", "already a collection called"),
])
def test_a_bad_or_taken_name_is_a_400_with_a_message(client, name, message):
    user = make_user()
    collection_create(name="Mood board", created_by=user)
    response = signed_in(client, user).post(LIST, {"name": name})
    assert response.status_code == 400 and message in response.content.decode()
    assert Collection.objects.count() == 1


@pytest.mark.database
def test_two_users_may_use_the_same_name(client):
    collection_create(name="Faves", created_by=make_user())
    collection_create(name="Faves", created_by=make_user())
    assert Collection.objects.filter(name="Faves").count() == 2


def test_team_collections_are_started_by_members_not_viewers_nor_outsiders(client):
    owner, member, viewer, outsider = make_user(), make_user(), make_user(), make_user()
    team = make_team(owner, (member, TeamRole.MEMBER), (viewer, TeamRole.VIEWER))
    response = signed_in(client, member).post(LIST, {"name": "Refs", "team": str(team.pk)})
    assert response.status_code == 302
    assert Collection.objects.get().owner_team == team and Collection.objects.get().owner_user is None
    for user in (viewer, outsider):
        response = signed_in(client, user).post(LIST, {"name": "Mine", "team": str(team.pk)})
        assert response.status_code == 400 and "Choose one of your teams." in response.content.decode()
    with pytest.raises(CollectionError):
        collection_create(name="Sneaky", created_by=viewer, team_id=team.pk)
    assert Collection.objects.count() == 1
    # every role sees the team's collection in the list; an outsider does not
    for user, sees in ((viewer, True), (owner, True), (outsider, False)):
        assert ("Refs" in signed_in(client, user).get(LIST).content.decode()) is sees


def test_rename_and_its_errors(client):
    user = make_user()
    board = collection_create(name="Board", created_by=user)
    collection_create(name="Other", created_by=user)
    url = reverse("generation:collection_rename", args=[board.pk])
    signed_in(client, user)
    assert client.get(url).status_code == 200
    response = client.post(url, {"name": "other"})
    assert response.status_code == 400 and "already a collection called" in response.content.decode()
    assert client.post(url, {"name": "Sketches"}).status_code == 302
    board.refresh_from_db()
    assert board.name == "Sketches"
    assert client.post(url, {"name": "Sketches"}).status_code == 302  # its own name again is fine


def test_delete_asks_first_then_deletes_the_collection_but_never_its_images(client):
    user = make_user()
    image = images_of(user)[0]
    board = collection_create(name="Board", created_by=user)
    collection_add_images(collection=board, images=[image], added_by=user)
    url = reverse("generation:collection_delete", args=[board.pk])
    signed_in(client, user)
    page = client.get(url)
    assert page.status_code == 200 and "It holds 1 image" in page.content.decode()
    assert client.post(url).status_code == 200 and Collection.objects.exists()  # no confirm: the page again
    response = client.post(url, {"confirm": "yes"})
    assert response.status_code == 302 and response["Location"] == LIST
    assert not Collection.objects.exists() and not CollectionItem.objects.exists()
    assert Image.objects.filter(pk=image.pk).exists()


def test_another_users_collection_is_a_404_everywhere(client):
    board = collection_create(name="Private", created_by=make_user())
    signed_in(client, make_user())
    for name in ("collection_detail", "collection_rename", "collection_delete"):
        assert client.get(reverse(f"generation:{name}", args=[board.pk])).status_code == 404
    for name in ("collection_rename", "collection_delete", "collection_remove_images"):
        url = reverse(f"generation:{name}", args=[board.pk])
        assert client.post(url, {"name": "x", "confirm": "yes"}).status_code == 404
    assert "Private" not in client.get(LIST).content.decode()
    board.refresh_from_db()
    assert board.name == "Private"


def test_team_roles_on_a_team_collection_viewer_sees_member_changes_admin_deletes(client):
    owner, admin, member, viewer = make_user(), make_user(), make_user(), make_user()
    team = make_team(owner, (admin, TeamRole.ADMIN), (member, TeamRole.MEMBER), (viewer, TeamRole.VIEWER))
    board = collection_create(name="Team board", created_by=owner, team_id=team.pk)
    rename = reverse("generation:collection_rename", args=[board.pk])
    delete = reverse("generation:collection_delete", args=[board.pk])
    assert signed_in(client, viewer).get(detail(board)).status_code == 200
    assert client.post(rename, {"name": "Viewer's"}).status_code == 403
    assert client.post(delete, {"confirm": "yes"}).status_code == 403
    assert signed_in(client, member).post(rename, {"name": "Renamed"}).status_code == 302
    assert client.post(delete, {"confirm": "yes"}).status_code == 403
    assert signed_in(client, admin).post(delete, {"confirm": "yes"}).status_code == 302
    assert not Collection.objects.exists()


# --- Images in collections ----------------------------------------------------------------------

def test_an_image_may_be_in_several_collections_and_adding_twice_is_harmless(client):
    user = make_user()
    image = images_of(user)[0]
    first, second = (collection_create(name=name, created_by=user) for name in ("A", "B"))
    url = reverse("generation:image_collections", args=[image.pk])
    signed_in(client, user)
    assert client.post(url, {"add": str(first.pk)}).status_code == 302
    response = client.post(url, {"add": str(second.pk)}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and "Added to “B”." in response.content.decode()
    assert client.post(url, {"add": str(second.pk)}).status_code == 302
    assert set(image.collections.all()) == {first, second}
    page = client.get(reverse("generation:image_detail", args=[image.pk])).content.decode()
    assert detail(first) in page and detail(second) in page


def test_the_image_page_adds_to_a_new_collection_and_removes_from_one(client):
    user = make_user()
    image = images_of(user)[0]
    url = reverse("generation:image_collections", args=[image.pk])
    signed_in(client, user)
    response = client.post(url, {"new_name": "Fresh"}, HTTP_HX_REQUEST="true")
    fresh = Collection.objects.get(name="Fresh")
    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html and 'id="image-collections"' in html
    assert list(fresh.images.all()) == [image]
    response = client.post(url, {"remove": str(fresh.pk)})
    assert response.status_code == 302 and not fresh.images.exists()
    assert Image.objects.filter(pk=image.pk).exists()


@pytest.mark.database
def test_the_image_page_answers_a_bad_choice_with_a_400_and_the_message(client):
    user = make_user()
    image = images_of(user)[0]
    url = reverse("generation:image_collections", args=[image.pk])
    signed_in(client, user)
    for data in ({}, {"add": "not-a-uuid"}):
        plain = client.post(url, data)
        assert plain.status_code == 400
        assert "Choose a collection, or name a new one." in plain.content.decode()
        assert "<html" in plain.content.decode()  # without JavaScript: the whole image page
    strangers = collection_create(name="Theirs", created_by=make_user())
    assert client.post(url, {"add": str(strangers.pk)}).status_code == 404
    assert not CollectionItem.objects.exists()


def test_a_team_collection_takes_only_that_teams_images(client):
    owner, member = make_user(), make_user()
    team = make_team(owner, (member, TeamRole.MEMBER))
    board = collection_create(name="Team board", created_by=member, team_id=team.pk)
    personal_image, team_image = images_of(member, 2)
    services.image_move_to_team(image=team_image, team_id=team.pk, user=member)
    url = reverse("generation:image_collections", args=[personal_image.pk])
    response = signed_in(client, member).post(url, {"add": str(board.pk)})
    assert response.status_code == 400 and "only takes its team" in response.content.decode()
    page = client.get(reverse("generation:image_detail", args=[personal_image.pk])).content.decode()
    assert "Team board" not in page  # not offered either
    url = reverse("generation:image_collections", args=[team_image.pk])
    assert client.post(url, {"add": str(board.pk)}).status_code == 302
    assert list(board.images.all()) == [team_image]


def test_a_viewer_cannot_add_to_a_team_collection(client):
    owner, viewer = make_user(), make_user()
    team = make_team(owner, (viewer, TeamRole.VIEWER))
    board = collection_create(name="Team board", created_by=owner, team_id=team.pk)
    image = images_of(owner)[0]
    services.image_move_to_team(image=image, team_id=team.pk, user=owner)
    url = reverse("generation:image_collections", args=[image.pk])
    assert signed_in(client, viewer).post(url, {"add": str(board.pk)}).status_code == 403
    assert not board.images.exists()
    assert not permissions.can_add_to_collection(viewer, board, image)


# --- The collection's page and the gallery's filter ---------------------------------------------

def test_the_collection_page_is_the_gallery_of_its_images_with_filters(client):
    user = make_user()
    inside = images_of(user, 3, prompt="a blue lake")
    images_of(user, 2, prompt="a blue lake")  # not in it
    board = collection_create(name="Lakes", created_by=user)
    collection_add_images(collection=board, images=inside, added_by=user)
    signed_in(client, user)
    html = client.get(detail(board)).content.decode()
    assert set(tile_ids(html)) == {str(image.pk) for image in inside}
    assert "Lakes" in html and 'id="bulk-form"' in html and "Remove from collection" in html
    assert client.get(detail(board) + "?q=red").status_code == 200
    assert tile_ids(client.get(detail(board) + "?q=red").content.decode()) == []
    oldest = tile_ids(client.get(detail(board) + "?sort=oldest").content.decode())
    assert oldest == [str(image.pk) for image in sorted(inside, key=lambda i: (i.created_at, i.pk))]


def test_a_personal_collection_shows_team_images_the_user_can_see_and_drops_them_when_access_ends(client):
    owner, member = make_user(), make_user()
    team = make_team(owner, (member, TeamRole.MEMBER))
    teammates = images_of(owner)[0]
    services.image_move_to_team(image=teammates, team_id=team.pk, user=owner)
    board = collection_create(name="Inspiration", created_by=member)
    collection_add_images(collection=board, images=[teammates], added_by=member)
    signed_in(client, member)
    assert tile_ids(client.get(detail(board)).content.decode()) == [str(teammates.pk)]
    html = client.get(detail(board)).content.decode()
    assert owner.email in html  # a collection page says who made each image
    Membership.objects.filter(user=member).delete()
    assert tile_ids(client.get(detail(board)).content.decode()) == []


def test_the_gallery_filters_by_one_of_my_collections(client):
    user = make_user()
    picked, _ = images_of(user, 2)
    board = collection_create(name="Picks", created_by=user)
    collection_add_images(collection=board, images=[picked], added_by=user)
    signed_in(client, user)
    page = client.get(GALLERY).content.decode()
    assert f'<option value="{board.pk}">Picks</option>' in page
    assert tile_ids(client.get(f"{GALLERY}?collection={board.pk}").content.decode()) == [str(picked.pk)]


@pytest.mark.database
@pytest.mark.parametrize("value", ["nonsense", "00000000-0000-0000-0000-000000000000"])
def test_a_collection_filter_that_is_not_one_of_mine_is_a_400(client, value):
    user = make_user()
    images_of(user)
    strangers = collection_create(name="Theirs", created_by=make_user())
    signed_in(client, user)
    for bad in (value, str(strangers.pk)):
        response = client.get(f"{GALLERY}?collection={bad}")
        assert response.status_code == 400 and "collection" in response.content.decode()


def test_the_collection_page_removes_selected_images_from_it(client):
    user = make_user()
    kept, removed = images_of(user, 2)
    board = collection_create(name="Board", created_by=user)
    collection_add_images(collection=board, images=[kept, removed], added_by=user)
    url = reverse("generation:collection_remove_images", args=[board.pk])
    response = signed_in(client, user).post(url, {"images": [str(removed.pk), "junk"], "next": detail(board)})
    assert response.status_code == 302 and response["Location"] == detail(board)
    assert list(board.images.all()) == [kept] and Image.objects.filter(pk=removed.pk).exists()


# --- The image page: who made it, into a team gallery and back ----------------------------------

def test_the_image_page_says_who_made_it_and_offers_only_teams_i_create_in(client):
    owner, me = make_user(), make_user()
    creating = make_team(owner, (me, TeamRole.MEMBER), name="Makers")
    make_team(owner, (me, TeamRole.VIEWER), name="Watchers")
    image = images_of(me)[0]
    html = signed_in(client, me).get(reverse("generation:image_detail", args=[image.pk])).content.decode()
    assert re.search(r"Made by <strong data-image-owner>you</strong>", html)
    assert f'<option value="{creating.pk}">Makers</option>' in html and "Watchers" not in html


def test_move_to_a_team_gallery_and_back(client):
    owner, me = make_user(), make_user()
    team = make_team(owner, (me, TeamRole.MEMBER), name="Makers")
    image = images_of(me)[0]
    url = reverse("generation:image_team", args=[image.pk])
    signed_in(client, me)
    response = client.post(url, {"team": str(team.pk)})
    assert response.status_code == 302
    image.refresh_from_db()
    assert image.team == team and image.owner == me
    html = signed_in(client, owner).get(reverse("generation:image_detail", args=[image.pk])).content.decode()
    assert me.email in html and "Makers" in html  # the teammate sees it, and who made it
    assert client.post(url, {"team": str(team.pk)}).status_code == 403  # not the owner's image to move
    response = signed_in(client, me).post(url, {"remove": "1"})
    image.refresh_from_db()
    assert response.status_code == 302 and image.team is None
    image_page = reverse("generation:image_detail", args=[image.pk])
    assert signed_in(client, owner).get(image_page).status_code == 404


def test_moving_into_a_team_where_i_am_a_viewer_or_outsider_is_refused(client):
    owner, me = make_user(), make_user()
    watching = make_team(owner, (me, TeamRole.VIEWER))
    foreign = make_team(make_user())
    image = images_of(me)[0]
    url = reverse("generation:image_team", args=[image.pk])
    signed_in(client, me)
    for team in (watching, foreign):
        response = client.post(url, {"team": str(team.pk)})
        assert response.status_code == 400 and "Choose one of your teams." in response.content.decode()
    assert client.post(url, {"team": "junk"}).status_code == 400
    image.refresh_from_db()
    assert image.team is None


def test_a_team_admin_takes_a_members_image_out_of_the_team_gallery_and_its_team_collections(client):
    owner, admin, member = make_user(), make_user(), make_user()
    team = make_team(owner, (admin, TeamRole.ADMIN), (member, TeamRole.MEMBER))
    image = images_of(member)[0]
    services.image_move_to_team(image=image, team_id=team.pk, user=member)
    team_board = collection_create(name="Team board", created_by=member, team_id=team.pk)
    own_board = collection_create(name="Mine", created_by=member)
    collection_add_images(collection=team_board, images=[image], added_by=member)
    collection_add_images(collection=own_board, images=[image], added_by=member)
    url = reverse("generation:image_team", args=[image.pk])
    assert signed_in(client, make_user()).post(url, {"remove": "1"}).status_code == 404
    response = signed_in(client, admin).post(url, {"remove": "1"})
    assert response.status_code == 302 and response["Location"] == GALLERY  # it is no longer theirs to see
    image.refresh_from_db()
    assert image.team is None and image.owner == member
    assert list(image.collections.all()) == [own_board]  # out of the team's collections, still in its owner's


def test_a_plain_member_cannot_take_a_teammates_image_out(client):
    owner, member = make_user(), make_user()
    team = make_team(owner, (member, TeamRole.MEMBER))
    image = images_of(owner)[0]
    services.image_move_to_team(image=image, team_id=team.pk, user=owner)
    url = reverse("generation:image_team", args=[image.pk])
    response = signed_in(client, member).post(url, {"remove": "1"})
    assert response.status_code == 403
    image.refresh_from_db()
    assert image.team == team


def test_moving_an_image_into_a_team_announces_it_to_the_team_gallery(django_capture_on_commit_callbacks):
    from generation.events import capture_events, team_gallery_group

    owner = make_user()
    team = make_team(owner)
    image = images_of(owner)[0]
    with capture_events() as sent, django_capture_on_commit_callbacks(execute=True):
        services.image_move_to_team(image=image, team_id=team.pk, user=owner)
    event = {"type": "gallery.image_added", "image_ids": [str(image.pk)]}
    assert (team_gallery_group(team.pk), event) in sent


def test_the_list_counts_only_images_i_can_see_and_shows_the_newest_as_cover(client):
    owner, member = make_user(), make_user()
    team = make_team(owner, (member, TeamRole.MEMBER))
    first, newest = images_of(member, 2)
    teammates = images_of(owner)[0]
    services.image_move_to_team(image=teammates, team_id=team.pk, user=owner)
    board = collection_create(name="Inspiration", created_by=member)
    collection_add_images(collection=board, images=[first], added_by=member)
    collection_add_images(collection=board, images=[teammates], added_by=member)
    collection_add_images(collection=board, images=[newest], added_by=member)
    html = signed_in(client, member).get(LIST).content.decode()
    assert "3 images" in html and reverse("generation:image_thumbnail", args=[newest.pk]) in html
    Membership.objects.filter(user=member).delete()  # the teammate's image is no longer theirs to see
    CollectionItem.objects.filter(image=newest).delete()
    html = client.get(LIST).content.decode()
    assert "1 image " in html and reverse("generation:image_thumbnail", args=[first.pk]) in html
    assert str(teammates.pk) not in html
