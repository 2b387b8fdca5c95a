"""/generations: create one (text to image, image to image, inpaint, outpaint, with LoRAs), list
mine, get one, cancel one.

A user's key sees the jobs its user made; a team's key the jobs made into that team's gallery.
Anything else is a 404, the same answer as a job that does not exist. Reading needs the `generate`
or `read_images` scope, creating and cancelling `generate`. Creating goes through the web's own
form (generation_create.py) and job_submit with the key, so the hold records the key and its
monthly cap applies; `Idempotency-Key` and the credit headers come from submit.py.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from asgiref.sync import sync_to_async
from django.db.models import Prefetch
from django.http import HttpResponse, StreamingHttpResponse
from ninja import Field, Query, Router, Schema, Status

from accounts.api import ApiProblem, problems, require_scope
from generation.api.common import file_response, page_of, require_any_scope
from generation.api.generation_create import bound_form, openapi_request_body, parse_request
from generation.api.live import latest_preview, live_progress
from generation.api.stream import job_events, released
from generation.api.submit import (
    cancel_active,
    created_headers,
    credits_charged,
    idempotency_key_of,
    job_from_form,
    key_actor,
    request_fingerprint,
    spend_headers,
    submit_once,
)
from generation.models import Image, Job, JobKind, JobState
from generation.selectors import queue_position

router = Router(tags=["generations"])
READ_SCOPES = ("generate", "read_images")

State = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class ImageOut(Schema):
    id: uuid.UUID
    index: int
    seed: int
    width: int
    height: int


class GenerationProgressOut(Schema):
    step: int
    total_steps: int
    eta_seconds: float | None = Field(description="While running, once measurable.")
    preview_url: str | None = Field(description="The latest denoising preview, while running.")


class LoraUsedOut(Schema):
    id: uuid.UUID
    name: str
    sha256: str
    weight: float


class GenerationOut(Schema):
    id: uuid.UUID
    state: State
    mode: Literal["txt2img", "img2img", "inpaint", "outpaint"]
    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    guidance_scale: float
    sampler: str
    seed: int
    num_images: int
    model_name: str
    loras: list[LoraUsedOut]
    team_id: uuid.UUID | None = Field(description="The team gallery its images go to, if any.")
    cost: int = Field(description="Credits reserved; charged only for a job that succeeds.")
    credits_charged: int = Field(description="Held while it waits or runs; once final, what it was charged "
                                             "(0 for a job cancelled or failed).")
    progress: GenerationProgressOut
    queue_position: int | None = Field(description="1-based place in the fair-share queue while queued.")
    error: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    images: list[ImageOut]


class GenerationListOut(Schema):
    items: list[GenerationOut]
    count: int = Field(description="Jobs matching the filters, over all pages.")


class ListQuery(Schema):
    state: State | None = Field(None, description="Only jobs in this state.")
    limit: int = Field(20, ge=1, le=100)
    offset: int = Field(0, ge=0, le=100_000)


def _readable_by(request):
    key = require_any_scope(request, READ_SCOPES, "generations")
    jobs = Job.objects.filter(kind=JobKind.GENERATE).prefetch_related(
        Prefetch("images", queryset=Image.objects.order_by("index"))
    )
    if key.owner_team_id is not None:
        return jobs.filter(team_id=key.owner_team_id)
    return jobs.filter(user_id=key.owner_user_id)


def _out(job: Job) -> GenerationOut:
    live = live_progress(job)
    return GenerationOut(
        id=job.pk, state=job.state, mode=job.mode, prompt=job.prompt, negative_prompt=job.negative_prompt,
        width=job.width, height=job.height, steps=job.steps, guidance_scale=job.guidance_scale,
        sampler=job.sampler, seed=job.seed, num_images=job.num_images, model_name=job.model_name,
        loras=[LoraUsedOut(**lora) for lora in job.loras], team_id=job.team_id, cost=job.cost,
        credits_charged=credits_charged(job),
        progress=GenerationProgressOut(step=live.step, total_steps=live.total_steps, eta_seconds=live.eta_seconds,
                             preview_url=live.preview_url),
        queue_position=queue_position(job) if job.state == "queued" else None,
        error=job.error, created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
        images=[ImageOut(id=i.pk, index=i.index, seed=i.seed, width=i.width, height=i.height) for i in job.images.all()],
    )


@router.get("/generations", response={200: GenerationListOut, **problems(403, 422)},
            summary="My generation jobs, newest first")
def generation_list(request, query: Query[ListQuery]):
    jobs = _readable_by(request)
    if query.state:
        jobs = jobs.filter(state=query.state)
    page, count = page_of(jobs.order_by("-created_at", "-id"), query)
    return GenerationListOut(items=[_out(job) for job in page], count=count)


@router.get("/generations/{generation_id}", response={200: GenerationOut, **problems(403, 404, 422)},
            summary="One generation job: state, progress, queue position, images")
def generation_detail(request, generation_id: uuid.UUID):
    return _out(_own_job(request, generation_id))


def _own_job(request, generation_id) -> Job:
    job = _readable_by(request).filter(pk=generation_id).first()
    if job is None:
        raise ApiProblem("not-found", "No generation with this id is yours.")
    return job


# --- Creating and cancelling ------------------------------------------------------------------------

FORM_FIELD_NAMES = {"save_to": "team", "lora": "loras", "lora_weight": "loras"}  # the form's name -> the API's


@router.post(
    "/generations", response={202: GenerationOut, **problems(400, 402, 403, 409, 415, 422)},
    openapi_extra=openapi_request_body(), summary="Create a generation (text or picture to image, with LoRAs)",
    description=(
        "Queues a job and reserves its credits; answers at once with the job (202), its cost and queue place. "
        "JSON, or multipart/form-data to upload `source` and `mask` as files. Send an `Idempotency-Key` "
        "header to retry safely: the same key and body return the same job, charged once."
    ),
)
def generation_create(request, response: HttpResponse):
    key = require_scope(request, "generate")
    parsed = parse_request(request)
    idempotency_key = idempotency_key_of(request)
    actor = key_actor(key)
    submitted = submit_once(
        key=key, idempotency_key=idempotency_key, fingerprint=request_fingerprint(request, parsed.raw, parsed.files),
        submit=lambda: job_from_form(bound_form(parsed, actor=actor), actor=actor, key=key,
                                     field_names=FORM_FIELD_NAMES),
    )
    job = _readable_by(request).get(pk=submitted.job.pk)
    created_headers(response, job=job, key=key, replayed=submitted.replayed, location=f"/api/v1/generations/{job.pk}")
    return Status(202, _out(job))


@router.post("/generations/{generation_id}/cancel", response={200: GenerationOut, **problems(403, 404, 409, 422)},
             summary="Cancel a generation: a queued one at once (refunded), a running one at its next step")
def generation_cancel(request, generation_id: uuid.UUID, response: HttpResponse):
    key = require_scope(request, "generate")
    job = cancel_active(_own_job(request, generation_id), what="generation")
    job = _readable_by(request).get(pk=job.pk)
    spend_headers(response, job=job, key=key)
    return _out(job)


# --- Following one: a stream of events, the latest preview -----------------------------------------

SSE_RESPONSE = {"responses": {"200": {
    "description": "Server-Sent Events until the generation is final: `state` (the generation, as GET returns "
                   "it; first a snapshot, then at every change) and `progress` (step, total_steps, elapsed, "
                   "eta_seconds, preview: a data: URL or null).",
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}}}


@router.get("/generations/{generation_id}/events", response={200: None, **problems(403, 404, 422)},
            openapi_extra=SSE_RESPONSE, summary="Follow a generation: its state and progress as Server-Sent Events")
async def generation_events(request, generation_id: uuid.UUID):
    job = await sync_to_async(released(_own_job))(request, generation_id)

    def snapshot() -> dict:
        return _out(_readable_by(request).get(pk=job.pk)).model_dump(mode="json")

    response = StreamingHttpResponse(job_events(job.pk, snapshot), content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    for header, value in getattr(request, "_studio_rate_headers", {}).items():
        response[header] = value
    return response


@router.get("/generations/{generation_id}/preview", url_name="generation_preview",
            response={200: None, **problems(403, 404, 422)},
            openapi_extra=file_response("The latest denoising preview (small; PNG or WebP).", "image/*"),
            summary="The latest preview frame of a running generation")
def generation_preview(request, generation_id: uuid.UUID):
    job = _own_job(request, generation_id)
    found = latest_preview(job.pk) if job.state == JobState.RUNNING else None
    if found is None:
        raise ApiProblem("not-found", "This generation has no preview now: previews exist while it runs.")
    data, mime = found
    return HttpResponse(data, content_type=mime, headers={"Cache-Control": "no-store"})
