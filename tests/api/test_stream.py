"""GET /api/v1/generations/{id}/events over the real Redis channel layer (the tests' private Redis),
through the ASGI app: the snapshot, live progress with its preview, the final state (then the
stream ends), keep-alives with a re-read when an event is lost; the latest preview and ETA in GET."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient, Client
from django.utils import timezone

from accounts import services as accounts
from generation import events
from generation.api import stream
from generation.models import Job, JobState
from tests.api.conftest import fast_user
from tests.factories import give_credits, submit_job

pytestmark = pytest.mark.django_db(transaction=True)
PREVIEW = "data:image/png;base64," + base64.b64encode(b"\x89PNG-frame").decode()


def owner_with_job():
    user = fast_user()
    give_credits(user, 100)
    job = submit_job(user)
    _, token = accounts.api_key_create(actor=user, name="k", scopes=["read_images"])
    return job, {"Authorization": f"Bearer {token}"}


def parse(chunk: bytes | str) -> list[tuple[str, dict]]:
    text = chunk.decode() if isinstance(chunk, bytes) else chunk
    found = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":"))
        if "event" in fields:
            found.append((fields["event"], json.loads(fields["data"])))
    return found


async def next_event(chunks) -> tuple[str, dict]:
    while True:
        chunk = await asyncio.wait_for(anext(chunks), timeout=10)
        parsed = parse(chunk)
        if parsed:
            return parsed[0]


def finish(job):
    Job.objects.filter(pk=job.pk).update(state=JobState.SUCCEEDED, finished_at=timezone.now(), progress_step=job.steps)
    job.refresh_from_db()
    events.send_event(events.job_group(job.pk), {"type": "job.state", "job_id": str(job.pk), "state": job.state})


@pytest.mark.asyncio
async def test_a_stream_sends_the_snapshot_progress_with_preview_and_ends_after_the_final_state():
    job, headers = await sync_to_async(owner_with_job)()
    response = await AsyncClient().get(f"/api/v1/generations/{job.pk}/events", headers=headers)
    assert response.status_code == 200 and response["Content-Type"] == "text/event-stream; charset=utf-8"
    assert response["Cache-Control"] == "no-cache" and "RateLimit-Remaining" in response
    chunks = aiter(response.streaming_content)
    kind, state = await next_event(chunks)
    assert kind == "state" and state["id"] == str(job.pk) and state["state"] == "queued"

    await sync_to_async(Job.objects.filter(pk=job.pk).update)(state=JobState.RUNNING, started_at=timezone.now())
    await sync_to_async(events.job_progress)(job_id=job.pk, step=2, total_steps=4, elapsed=1.0, preview=PREVIEW)
    kind, progress = await next_event(chunks)
    assert kind == "progress"
    assert progress == {"step": 2, "total_steps": 4, "elapsed": 1.0, "eta_seconds": 1.0, "preview": PREVIEW}

    await sync_to_async(finish)(job)
    kind, state = await next_event(chunks)
    assert kind == "state" and state["state"] == "succeeded"
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(chunks), timeout=10)


@pytest.mark.asyncio
async def test_a_lost_event_is_caught_up_at_the_next_keep_alive(monkeypatch):
    monkeypatch.setattr(stream, "KEEPALIVE_SECONDS", 0.3)
    job, headers = await sync_to_async(owner_with_job)()

    def snapshot():
        return {"id": str(job.pk), "state": Job.objects.get(pk=job.pk).state}

    lines = aiter(stream.job_events(job.pk, snapshot, keepalive=0.3))
    assert parse(await anext(lines))[0][1]["state"] == "queued"
    await sync_to_async(Job.objects.filter(pk=job.pk).update)(state=JobState.CANCELLED)  # no event sent
    assert await anext(lines) == ": keep-alive\n\n"
    assert parse(await anext(lines))[0] == ("state", {"id": str(job.pk), "state": "cancelled"})
    with pytest.raises(StopAsyncIteration):
        await anext(lines)


def test_only_the_owners_key_may_follow_a_generation():
    job, headers = owner_with_job()
    client = Client()
    assert client.get(f"/api/v1/generations/{job.pk}/events").status_code == 401
    _, stranger = owner_with_job()
    response = client.get(f"/api/v1/generations/{job.pk}/events", headers=stranger)
    assert response.status_code == 404 and response["Content-Type"] == "application/problem+json"


def test_a_running_generation_reports_its_eta_and_its_latest_preview():
    job, headers = owner_with_job()
    client = Client()
    assert client.get(f"/api/v1/generations/{job.pk}/preview", headers=headers).status_code == 404
    Job.objects.filter(pk=job.pk).update(state=JobState.RUNNING, started_at=timezone.now(), progress_step=1)
    events.job_progress(job_id=job.pk, step=3, total_steps=4, elapsed=1.5, preview=PREVIEW)
    events.job_progress(job_id=job.pk, step=3, total_steps=4, elapsed=1.6, preview=None)  # throttled: none this time
    body = client.get(f"/api/v1/generations/{job.pk}", headers=headers).json()
    assert body["progress"] == {"step": 3, "total_steps": 4, "eta_seconds": 0.5,
                                "preview_url": f"/api/v1/generations/{job.pk}/preview"}
    frame = client.get(body["progress"]["preview_url"], headers=headers)
    assert frame.status_code == 200 and frame["Content-Type"] == "image/png" and frame.content == b"\x89PNG-frame"
    _, stranger = owner_with_job()
    assert client.get(body["progress"]["preview_url"], headers=stranger).status_code == 404
