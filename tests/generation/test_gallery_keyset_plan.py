"""A deep gallery page costs what the first one does: on PostgreSQL the keyset cursor is where the
index scan starts (an Index Cond), not a filter over every row before it (found by
benchmarks/gallery_load.py: a page 5,000 images deep read and discarded 5,001 rows)."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from generation import selectors
from generation.models import Image, Job, JobState
from tests.factories import make_user

ON_POSTGRESQL = connection.vendor == "postgresql"
pytestmark = [
    pytest.mark.django_db,
    pytest.mark.database,
    pytest.mark.skipif(not ON_POSTGRESQL, reason="PostgreSQL query plans (CI's PostgreSQL pass)"),
]


def _images(user, count: int) -> None:
    jobs = Job.objects.bulk_create([
        Job(user=user, state=JobState.SUCCEEDED, prompt=f"image {n}", width=64, height=64, steps=4,
            guidance_scale=7, sampler="euler", seed=n, num_images=1, model_name="test", cost=1)
        for n in range(count)
    ])
    Image.objects.bulk_create([
        Image(job=job, owner=user, index=0, seed=job.seed, width=64, height=64, file=f"x/{job.pk}.png",
              infotext="x")
        for job in jobs
    ])
    with connection.cursor() as cursor:  # one timestamp each, a minute apart (bulk_create gave all the same)
        cursor.execute(
            "UPDATE generation_image SET created_at = now() - s.n * interval '1 minute' FROM "
            "(SELECT id, row_number() OVER (ORDER BY id) AS n FROM generation_image WHERE owner_id = %s) AS s "
            "WHERE generation_image.id = s.id", [user.pk])
        cursor.execute("ANALYZE generation_image")


def _image_scans(plan: dict):
    if plan.get("Relation Name") == "generation_image":
        yield plan
    for child in plan.get("Plans", []):
        yield from _image_scans(child)


@pytest.mark.parametrize("oldest_first", [False, True], ids=["newest first", "oldest first"])
def test_a_page_deep_in_the_gallery_starts_its_index_scan_at_the_cursor(oldest_first):
    user = make_user()
    _images(user, 300)
    ordered = Image.objects.filter(owner=user).order_by(*(["created_at", "id"] if oldest_first
                                                         else ["-created_at", "-id"]))
    cursor_image = ordered[200]
    with CaptureQueriesContext(connection) as captured:
        page, _ = selectors.gallery_page(user, oldest_first=oldest_first,
                                         after=(cursor_image.created_at, cursor_image.id))
    assert [image.pk for image in page] == [image.pk for image in ordered[201:225]]
    (sql,) = [q["sql"] for q in captured.captured_queries if "ORDER BY" in q["sql"]]
    with connection.cursor() as cursor:
        # An index scan, as on a big gallery (this one is small enough to read whole).
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
        cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")
        explained = cursor.fetchone()[0]
    (plan,) = json.loads(explained) if isinstance(explained, str) else explained
    (scan,) = list(_image_scans(plan["Plan"]))
    assert scan["Index Name"] == "image_gallery_keyset_idx"
    assert "created_at" in scan["Index Cond"], scan["Index Cond"]
    assert scan.get("Rows Removed by Filter", 0) <= 1  # not the 200 rows before the cursor
