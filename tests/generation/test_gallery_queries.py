"""Gallery pages run a constant number of queries whatever the number of images: the personal
gallery, a collection's page (personal and team, with images of several creators), the gallery
filtered by a collection, and the htmx "load more" page, each with 10 and with 200 images."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.models import TeamRole
from generation.models import Image
from generation.services.collections import collection_add_images, collection_create
from tests.factories import make_user
from tests.generation.test_collections import images_of, make_team, signed_in
from tests.generation.test_gallery import next_url, tile_ids

pytestmark = [pytest.mark.django_db, pytest.mark.database]


def grow_to(total: int, *, owner, team, boards, others) -> None:
    """Add images until the owner has `total`; half in the team gallery (made by several members),
    every image in each collection that may take it."""
    while Image.objects.filter(owner=owner).count() < total:
        for maker in (owner, *others):
            made = images_of(maker, 4, prompt="a quiet harbour at dawn")
            Image.objects.filter(pk__in=[image.pk for image in made[:2]]).update(team=team)
    personal, team_board = boards
    everything = list(Image.objects.select_related("job"))
    collection_add_images(collection=personal, images=everything, added_by=owner)
    collection_add_images(collection=team_board, images=[i for i in everything if i.team_id == team.pk],
                          added_by=owner)


def count_queries(client, url: str, **headers) -> tuple[int, str]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url, **headers)
    assert response.status_code == 200, response.content[:500]
    return len(captured.captured_queries), response.content.decode()


def next_page_queries(client, first_page_html: str) -> int:
    return count_queries(client, next_url(first_page_html), HTTP_HX_REQUEST="true")[0]


@pytest.fixture
def world(client):
    owner, member = make_user(), make_user()
    team = make_team(owner, (member, TeamRole.MEMBER))
    boards = (collection_create(name="Mine", created_by=owner),
              collection_create(name="Team board", created_by=owner, team_id=team.pk))
    signed_in(client, owner)
    return {"owner": owner, "team": team, "boards": boards, "others": [member]}


def pages(world) -> dict[str, str]:
    personal, team_board = world["boards"]
    return {
        "gallery": reverse("generation:gallery"),
        "gallery filtered by a collection": f"{reverse('generation:gallery')}?collection={personal.pk}",
        "gallery searched": f"{reverse('generation:gallery')}?q=harbour&sort=oldest",
        "personal collection": reverse("generation:collection_detail", args=[personal.pk]),
        "team collection": reverse("generation:collection_detail", args=[team_board.pk]),
    }


def test_each_gallery_page_runs_the_same_queries_with_10_and_200_images(client, world):
    grow_to(10, **world)
    small = {name: count_queries(client, url) for name, url in pages(world).items()}
    grow_to(200, **world)
    large = {name: count_queries(client, url) for name, url in pages(world).items()}
    for name in small:
        (few, small_html), (many, large_html) = small[name], large[name]
        assert len(tile_ids(large_html)) == 24 and len(tile_ids(small_html)) >= 5, name  # full pages
        assert few == many, f"{name}: {few} queries with 10 images, {many} with 200"
        assert many <= 16, f"{name}: {many} queries"
        print(f"{name}: {few} queries with 10 images, {many} with 200")


def test_the_next_page_runs_the_same_queries_with_10_and_200_images(client, world):
    grow_to(60, **world)  # more than two pages everywhere
    first = {name: count_queries(client, url)[1] for name, url in pages(world).items()}
    small = {name: next_page_queries(client, html) for name, html in first.items()}
    grow_to(200, **world)
    first = {name: count_queries(client, url)[1] for name, url in pages(world).items()}
    large = {name: next_page_queries(client, html) for name, html in first.items()}
    assert small == large


def test_the_collections_list_runs_the_same_queries_with_3_and_30_collections(client, world):
    grow_to(10, **world)
    owner, team = world["owner"], world["team"]
    images = list(Image.objects.filter(owner=owner))
    url = reverse("generation:collection_list")

    def add_collections(upto: int) -> None:
        number = len(world["boards"])
        while number < upto:
            mine = collection_create(name=f"Board {number}", created_by=owner)
            collection_add_images(collection=mine, images=images[: number % 7 + 1], added_by=owner)
            collection_create(name=f"Team board {number}", created_by=owner, team_id=team.pk)
            number += 2
        world["boards"] = (*world["boards"], *range(upto - len(world["boards"])))

    add_collections(3)
    few, _ = count_queries(client, url)
    add_collections(30)
    many, html = count_queries(client, url)
    assert html.count("data-collection-card") >= 30
    assert few == many, f"{few} queries with 3 collections, {many} with 30"
