"""GET /generations and /generations/{id}: a key's own generation jobs (read-only in this pass).

A user's key sees the jobs its user made; a team's key the jobs made into that team's gallery.
Anything else is a 404, the same answer as a job that does not exist. Needs the `generate` or
`read_images` scope. Creating, cancelling and the progress stream come with the next pass (they
need `job_submit(..., api_key=)`, so the hold records the key and its cap applies).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from django.db.models import Prefetch
from ninja import Field, Query, Router, Schema

from accounts.api import ApiProblem, api_key_of, problems
from generation.models import Image, Job, JobKind
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


class ProgressOut(Schema):
    step: int
    total_steps: int


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
    cost: int = Field(description="Credits reserved; charged only for a job that succeeds.")
    progress: ProgressOut
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
    key = api_key_of(request)
    if not any(key.has_scope(scope) for scope in READ_SCOPES):
        raise ApiProblem("insufficient-scope", "Reading generations needs the 'generate' or 'read_images' scope.")
    jobs = Job.objects.filter(kind=JobKind.GENERATE).prefetch_related(
        Prefetch("images", queryset=Image.objects.order_by("index"))
    )
    if key.owner_team_id is not None:
        return jobs.filter(team_id=key.owner_team_id)
    return jobs.filter(user_id=key.owner_user_id)


def _out(job: Job) -> GenerationOut:
    return GenerationOut(
        id=job.pk, state=job.state, mode=job.mode, prompt=job.prompt, negative_prompt=job.negative_prompt,
        width=job.width, height=job.height, steps=job.steps, guidance_scale=job.guidance_scale,
        sampler=job.sampler, seed=job.seed, num_images=job.num_images, model_name=job.model_name, cost=job.cost,
        progress=ProgressOut(step=job.progress_step, total_steps=job.steps),
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
    page = list(jobs.order_by("-created_at", "-id")[query.offset:query.offset + query.limit])
    return GenerationListOut(items=[_out(job) for job in page], count=jobs.count())


@router.get("/generations/{generation_id}", response={200: GenerationOut, **problems(403, 404, 422)},
            summary="One generation job: state, progress, queue position, images")
def generation_detail(request, generation_id: uuid.UUID):
    job = _readable_by(request).filter(pk=generation_id).first()
    if job is None:
        raise ApiProblem("not-found", "No generation with this id is yours.")
    return _out(job)
