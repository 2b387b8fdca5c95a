"""The personal gallery: keyset paging, prompt search, filters, favourites, delete, permissions."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.postgres.search import SearchQuery, SearchVector
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from billing.models import LedgerEntry
from billing.selectors import wallet_balance
from generation import selectors, services
from generation.models import Image, Job, JobState
from tests.factories import make_user, submit_job

pytestmark = [pytest.mark.django_db]

GALLERY = reverse("generation:gallery")
TILE_ID = re.compile(r'id="image-([0-9a-f-]{36})"')


def make_job_with_images(user, *, count: int = 1, prompt: str = "a red circle", sampler: str = "euler",
                         width: int = 64, height: int = 64) -> Job:
    """A finished job with `count` images whose PNG and thumbnail exist in storage."""
    job = Job.objects.create(
        user=user, state=JobState.SUCCEEDED, prompt=prompt, width=width, height=height, steps=4,
        guidance_scale=7, sampler=sampler, seed=1, num_images=min(count, 4), model_name="test", cost=3,
    )
    for index in range(count):
        png = default_storage.save(f"images/{user.pk}/{job.pk}/{index}.png", ContentFile(b"\x89PNG fake"))
        webp = default_storage.save(f"images/{user.pk}/{job.pk}/{index}.webp", ContentFile(b"RIFF fake"))
        Image.objects.create(job=job, owner=user, index=index, seed=1 + index, width=width, height=height,
                             file=png, thumbnail=webp, infotext="x")
    return job


def tile_ids(html: str) -> list[str]:
    return TILE_ID.findall(html)


def next_url(html: str) -> str | None:
    match = re.search(r'hx-get="([^"]+)" hx-trigger="revealed"', html)
    return match.group(1).replace("&amp;", "&") if match else None


def all_pages(client, url: str, *, htmx: bool = True) -> list[list[str]]:
    pages = []
    headers = {"HTTP_HX_REQUEST": "true"} if htmx else {}
    response = client.get(url)  # the first page is always a full page
    while True:
        assert response.status_code == 200
        html = response.content.decode()
        pages.append(tile_ids(html))
        url = next_url(html)
        if url is None:
            return pages
        response = client.get(url, **headers)


# --- Paging -------------------------------------------------------------------------------------

@pytest.mark.database
def test_gallery_pages_cover_every_image_once_newest_first_even_with_equal_timestamps(client_with_credits):
    for _ in range(13):
        make_job_with_images(client_with_credits.user, count=4)  # 52 images: three pages of 24
    same_moment = timezone.now() - timedelta(days=1)
    tied = list(Image.objects.order_by("?").values_list("pk", flat=True)[:30])
    Image.objects.filter(pk__in=tied).update(created_at=same_moment)  # time alone would skip some

    pages = all_pages(client_with_credits, GALLERY)
    seen = [image_id for page in pages for image_id in page]
    assert [len(page) for page in pages] == [24, 24, 4]
    expected = [str(pk) for pk in Image.objects.order_by("-created_at", "-id").values_list("pk", flat=True)]
    assert seen == expected


def test_oldest_first_and_the_plain_load_more_link_page_without_javascript(client_with_credits):
    for _ in range(7):
        make_job_with_images(client_with_credits.user, count=4)
    pages = all_pages(client_with_credits, GALLERY + "?sort=oldest", htmx=False)
    seen = [image_id for page in pages for image_id in page]
    assert seen == [str(pk) for pk in Image.objects.order_by("created_at", "id").values_list("pk", flat=True)]
    html = client_with_credits.get(GALLERY + "?sort=oldest").content.decode()
    assert 'class="btn" href="/gallery/?sort=oldest&amp;after=' in html  # "Load more" keeps the filters


@pytest.mark.database
def test_a_later_page_does_not_use_offset_and_images_added_meanwhile_do_not_shift_it(client_with_credits):
    for _ in range(7):
        make_job_with_images(client_with_credits.user, count=4)
    first = client_with_credits.get(GALLERY).content.decode()
    make_job_with_images(client_with_credits.user, count=4)  # new images arrive at the top
    second = client_with_credits.get(next_url(first), HTTP_HX_REQUEST="true").content.decode()
    assert not set(tile_ids(first)) & set(tile_ids(second))
    assert len(tile_ids(first)) + len(tile_ids(second)) == 28


def test_the_htmx_page_is_only_tiles_and_the_next_sentinel(client_with_credits):
    for _ in range(7):
        make_job_with_images(client_with_credits.user, count=4)
    first = client_with_credits.get(GALLERY).content.decode()
    fragment = client_with_credits.get(next_url(first), HTTP_HX_REQUEST="true").content.decode()
    assert "<html" not in fragment and len(tile_ids(fragment)) == 4 and next_url(fragment) is None


def test_gallery_runs_a_constant_number_of_queries(client_with_credits, django_assert_max_num_queries):
    make_job_with_images(client_with_credits.user, count=2)
    with django_assert_max_num_queries(12) as few:
        client_with_credits.get(GALLERY)
    for _ in range(10):
        make_job_with_images(client_with_credits.user, count=4)
    with django_assert_max_num_queries(len(few.captured_queries)):
        client_with_credits.get(GALLERY)


# --- Search and filters -------------------------------------------------------------------------

@pytest.mark.database
def test_search_needs_every_word_case_insensitively(client_with_credits):
    both = make_job_with_images(client_with_credits.user, prompt="A Lighthouse under a stormy sky").images.get()
    make_job_with_images(client_with_credits.user, prompt="a lighthouse at noon")
    make_job_with_images(client_with_credits.user, prompt="a stormy ocean")
    html = client_with_credits.get(GALLERY, {"q": "stormy LIGHTHOUSE"}).content.decode()
    assert tile_ids(html) == [str(both.pk)]
    assert len(tile_ids(client_with_credits.get(GALLERY, {"q": "lighthouse"}).content.decode())) == 2
    assert tile_ids(client_with_credits.get(GALLERY, {"q": "volcano"}).content.decode()) == []


def test_sampler_size_and_favourite_filters(client_with_credits):
    user = client_with_credits.user
    euler = make_job_with_images(user, sampler="euler").images.get()
    ddim_wide = make_job_with_images(user, sampler="ddim", width=96, height=64).images.get()
    starred = make_job_with_images(user, sampler="ddim").images.get()
    services.image_set_favourite(image=starred, favourite=True)

    def ids(**query):
        return set(tile_ids(client_with_credits.get(GALLERY, query).content.decode()))

    assert ids(sampler="euler") == {str(euler.pk)}
    assert ids(sampler="ddim") == {str(ddim_wide.pk), str(starred.pk)}
    assert ids(size="96x64") == {str(ddim_wide.pk)}
    assert ids(size="64x64", sampler="ddim") == {str(starred.pk)}
    assert ids(favourites="on") == {str(starred.pk)}
    assert '<option value="96x64">96×64</option>' in client_with_credits.get(GALLERY).content.decode()


@pytest.mark.database
def test_date_range_includes_both_days(client_with_credits):
    old, middle, new = (make_job_with_images(client_with_credits.user).images.get() for _ in range(3))
    now = timezone.now()
    for image, days_ago in ((old, 10), (middle, 5), (new, 0)):
        Image.objects.filter(pk=image.pk).update(created_at=now - timedelta(days=days_ago))
    day = lambda days_ago: (now - timedelta(days=days_ago)).date().isoformat()  # noqa: E731

    def ids(**query):
        return set(tile_ids(client_with_credits.get(GALLERY, query).content.decode()))

    assert ids(date_from=day(5), date_to=day(5)) == {str(middle.pk)}
    assert ids(date_from=day(6)) == {str(middle.pk), str(new.pk)}
    assert ids(date_to=day(5)) == {str(old.pk), str(middle.pk)}


@pytest.mark.database
@pytest.mark.parametrize("query, message", [
    ({"sampler": "nope"}, "Select a valid choice"),
    ({"size": "1x1"}, "Select a valid choice"),
    ({"size": "axb"}, "Select a valid choice"),
    ({"date_from": "2026-13-45"}, "Enter a valid date"),
    ({"date_from": "2026-05-02", "date_to": "2026-05-01"}, "must not be after"),
    ({"date_to": "9999-12-31"}, "earlier"),
    ({"sort": "random"}, "Select a valid choice"),
    ({"after": "123.not-a-uuid"}, "load more"),
    ({"after": "9" * 18 + ".0123456789abcdef0123456789abcdef"}, "load more"),
    ({"after": "1."}, "load more"),
    ({"after": "-5.0123456789abcdef0123456789abcdef"}, "load more"),
    ({"q": "x " * 13}, "at most 12 words"),
    ({"q": "x" * 201}, "at most 200 characters"),
])
def test_bad_filter_values_answer_400_with_a_message(client_with_credits, query, message):
    make_job_with_images(client_with_credits.user)
    response = client_with_credits.get(GALLERY, query)
    assert response.status_code == 400
    assert message in response.content.decode()


def test_gallery_needs_login(client):
    response = client.get(GALLERY)
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


# --- Favourite --------------------------------------------------------------------------------------

def test_favourite_toggles_by_htmx_and_by_plain_post(client_with_credits):
    image = make_job_with_images(client_with_credits.user).images.get()
    url = reverse("generation:image_favourite", args=[image.pk])
    response = client_with_credits.post(url, {"favourite": "1"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and 'aria-pressed="true"' in response.content.decode()
    assert Image.objects.get(pk=image.pk).favourite is True
    response = client_with_credits.post(url, {"favourite": "0", "next": GALLERY + "?q=red"})
    assert response.status_code == 302 and response["Location"] == GALLERY + "?q=red"
    assert Image.objects.get(pk=image.pk).favourite is False
    response = client_with_credits.post(url, {"favourite": "1", "next": "https://evil.example/"})
    assert response["Location"] == reverse("generation:image_detail", args=[image.pk])


def test_favourite_refuses_a_bad_value_and_a_get(client_with_credits):
    image = make_job_with_images(client_with_credits.user).images.get()
    url = reverse("generation:image_favourite", args=[image.pk])
    assert client_with_credits.post(url, {"favourite": "maybe"}).status_code == 400
    assert client_with_credits.get(url).status_code == 405
    assert Image.objects.get(pk=image.pk).favourite is False


def test_image_page_offers_favourite_and_delete(client_with_credits):
    image = make_job_with_images(client_with_credits.user).images.get()
    html = client_with_credits.get(reverse("generation:image_detail", args=[image.pk])).content.decode()
    assert reverse("generation:image_favourite", args=[image.pk]) in html
    assert reverse("generation:image_delete", args=[image.pk]) in html


# --- Delete -------------------------------------------------------------------------------------

def test_a_plain_delete_post_asks_first_and_deletes_nothing(client_with_credits):
    image = make_job_with_images(client_with_credits.user).images.get()
    response = client_with_credits.post(reverse("generation:image_delete", args=[image.pk]))
    assert response.status_code == 200 and "Delete this image?" in response.content.decode()
    assert Image.objects.filter(pk=image.pk).exists()


def test_delete_removes_the_files_and_answers_404_at_once(client_with_credits, django_capture_on_commit_callbacks):
    job = make_job_with_images(client_with_credits.user, count=2)
    image, other = job.images.order_by("index")
    files = [image.file.name, image.thumbnail.name]
    with django_capture_on_commit_callbacks(execute=True):
        response = client_with_credits.post(reverse("generation:image_delete", args=[image.pk]), {"confirm": "yes"})
    assert response.status_code == 302 and response["Location"] == GALLERY
    assert not any(default_storage.exists(name) for name in files)
    assert default_storage.exists(other.file.name) and default_storage.exists(other.thumbnail.name)
    for name in ("image_detail", "image_file", "image_thumbnail"):
        assert client_with_credits.get(reverse(f"generation:{name}", args=[image.pk])).status_code == 404, name


def test_deleting_the_last_image_leaves_the_job_page_saying_so(
    client_with_credits, django_capture_on_commit_callbacks,
):
    job = make_job_with_images(client_with_credits.user)
    with django_capture_on_commit_callbacks(execute=True):
        response = client_with_credits.post(reverse("generation:image_delete", args=[job.images.get().pk]),
                                    {"confirm": "yes"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and response.content == b""
    html = client_with_credits.get(reverse("generation:job_detail", args=[job.pk])).content.decode()
    assert "Images deleted" in html


def test_deleting_an_image_never_touches_credits(client_with_credits, django_capture_on_commit_callbacks):
    job = submit_job(client_with_credits.user)
    lease = services.job_claim_next(worker_id="w")
    png = default_storage.save(f"images/{job.pk}/0.png", ContentFile(b"\x89PNG fake"))
    services.job_succeed(lease=lease, engine_seconds=1, images=[services.StoredImage(
        index=0, seed=42, width=64, height=64, file_name=png, thumbnail_name="", infotext="x")])
    balance, entries = wallet_balance(user=client_with_credits.user), LedgerEntry.objects.count()
    with django_capture_on_commit_callbacks(execute=True):
        services.image_delete(image=Image.objects.get(job=job))
    assert wallet_balance(user=client_with_credits.user) == balance == (100 - job.cost, 0)
    assert LedgerEntry.objects.count() == entries
    assert not default_storage.exists(png)


# --- Another user -----------------------------------------------------------------------------------

def test_another_users_image_is_404_for_every_action(client):
    image = make_job_with_images(make_user()).images.get()
    client.force_login(make_user())
    for name in ("image_detail", "image_file", "image_thumbnail", "image_delete"):
        assert client.get(reverse(f"generation:{name}", args=[image.pk])).status_code == 404, name
    favourite = reverse("generation:image_favourite", args=[image.pk])
    delete = reverse("generation:image_delete", args=[image.pk])
    assert client.post(favourite, {"favourite": "1"}).status_code == 404
    assert client.post(delete, {"confirm": "yes"}).status_code == 404
    assert client.post(delete).status_code == 404
    assert tile_ids(client.get(GALLERY).content.decode()) == []
    image.refresh_from_db()
    assert image.favourite is False and default_storage.exists(image.file.name)


def test_the_size_filter_offers_only_my_own_sizes(client):
    make_job_with_images(make_user(), width=128, height=96)
    client.force_login(make_user())
    assert client.get(GALLERY, {"size": "128x96"}).status_code == 400


# --- PostgreSQL -----------------------------------------------------------------------------------

ON_POSTGRESQL = connection.vendor == "postgresql"


@pytest.mark.database
@pytest.mark.skipif(not ON_POSTGRESQL, reason="PostgreSQL full-text search (CI's PostgreSQL pass)")
def test_postgresql_searches_prompts_with_full_text_search_and_its_gin_index(client_with_credits):
    lighthouse = make_job_with_images(client_with_credits.user, prompt="Lighthouses under stormy skies").images.get()
    make_job_with_images(client_with_credits.user, prompt="a lighthouse at noon")
    images, _ = selectors.gallery_page(client_with_credits.user, words=["stormy", "LIGHTHOUSE"])
    assert [image.pk for image in images] == [lighthouse.pk]  # stems match: "lighthouse" finds "Lighthouses"
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'job_prompt_search_idx'")
        (definition,) = cursor.fetchone()
        assert "gin" in definition and "to_tsvector" in definition
    # The GIN index serves exactly the expression the selector searches with.
    searched = Job.objects.alias(v=SearchVector("prompt", config="english")).filter(
        v=SearchQuery("stormy lighthouse", config="english", search_type="plain"))
    sql, params = searched.values("pk").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "job_prompt_search_idx" in plan
