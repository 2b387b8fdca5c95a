"""What a page shows of a job: its images in the order asked for, its place in the fair queue."""

from __future__ import annotations

import pytest
from django.urls import reverse

from generation import selectors, services
from tests.factories import make_user, submit_job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.database]


def stored(index: int, seed: int) -> services.StoredImage:
    return services.StoredImage(
        index=index, seed=seed, width=64, height=64, file_name=f"images/x/{index}.png",
        thumbnail_name=f"images/x/{index}.webp", infotext="a red circle",
    )


def finished_job_of_four(user):
    job = submit_job(user, num_images=4, seed=100)
    lease = services.job_claim_next(worker_id="w")
    services.job_succeed(lease=lease, images=[stored(i, 100 + i) for i in range(4)], engine_seconds=1.0)
    return job


def test_a_jobs_images_are_listed_in_the_order_asked_for_everywhere(client):
    user = make_user(credits=500)
    job = finished_job_of_four(user)
    context = selectors.job_context(selectors.job_for_user(user, job.pk))
    assert [image.seed for image in context["images"]] == [100, 101, 102, 103]
    assert [image.seed for image in selectors.jobs_for_user(user)[0].images.all()] == [100, 101, 102, 103]

    client.force_login(user)
    page = client.get(reverse("generation:job_detail", args=[job.pk])).content.decode()
    seeds_in_page = [page.index(f"(seed {seed})") for seed in (100, 101, 102, 103)]
    assert seeds_in_page == sorted(seeds_in_page), "the first tile must be the job's own seed"

    first_image = min(job.images.all(), key=lambda image: image.index)
    for url in (reverse("generation:job_list"), reverse("generation:create")):
        html = client.get(url).content.decode()
        thumbnail = reverse("generation:image_thumbnail", args=[first_image.pk])
        assert thumbnail in html, f"{url} must show the job's first image as its thumbnail"


def test_queue_position_counts_only_the_jobs_the_fair_queue_runs_first(settings):
    settings.STUDIO_MAX_ACTIVE_JOBS_PER_USER = 20
    busy, newcomer = make_user(credits=5000), make_user(credits=500)
    busy_jobs = [submit_job(busy) for _ in range(6)]
    mine = submit_job(newcomer)
    # Round one: busy's oldest job and mine (busy's older job first: neither was ever served).
    assert selectors.queue_position(mine) == 2
    assert selectors.queue_position(busy_jobs[0]) == 1
    assert selectors.queue_position(busy_jobs[1]) == 3  # after mine, in round two

    # Once busy has been served, the newcomer goes first in every round.
    lease = services.job_claim_next(worker_id="w")
    services.job_succeed(lease=lease, images=[], engine_seconds=0.1)
    assert selectors.queue_position(mine) == 1
    second = submit_job(newcomer)
    assert selectors.queue_position(second) == 3  # mine, busy's next, then this one


def test_queue_position_of_a_lone_users_jobs_is_their_order():
    user = make_user(credits=500)
    jobs = [submit_job(user) for _ in range(3)]
    assert [selectors.queue_position(job) for job in jobs] == [1, 2, 3]
