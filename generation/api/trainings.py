"""/trainings: start a fine-tuning run (LoRA or DreamBooth) from uploaded pictures, list mine, get
one (state, progress, the loss curve, samples, the LoRA it made), cancel one.

A training belongs to the user whose key started it and bills their wallet: services.training_submit
has no team gallery or team wallet, so a team's key cannot start one (a 403 that says so) and sees
none. Reading needs `train` or `read_images`, starting and cancelling `train`. A request is checked
by the web's own forms (training_forms: the pictures through the upload service, the settings
with their presets and rules), then training_submit with the key, so the hold records the key and
its monthly cap applies; `Idempotency-Key` and the credit headers come from submit.py.
"""

from __future__ import annotations

import json
import math
import uuid
from datetime import datetime
from typing import Literal

from django.http import HttpResponse
from django.urls import reverse
from ninja import Field, Query, Router, Schema, Status

from accounts.api import ApiProblem, problems, require_scope
from generation import serving, training_selectors
from generation.api.common import file_response, page_of, require_any_scope
from generation.api.live import live_progress
from generation.api.submit import (
    SUBMIT_REFUSALS,
    cancel_active,
    created_headers,
    credits_charged,
    form_problem,
    idempotency_key_of,
    request_fingerprint,
    spend_headers,
    submit_once,
    submit_problem,
)
from generation.engine.contracts import InvalidRequest
from generation.engine.training.spec import (
    MAX_CAPTION_CHARS,
    MAX_CLASS_IMAGES,
    MAX_CLASS_PROMPTS,
    MAX_IMAGES,
    MAX_LEARNING_RATE,
    MAX_PRIOR_LOSS_WEIGHT,
    MAX_RANK,
    MAX_STEPS,
    METHODS,
    MIN_IMAGES,
    MIN_LEARNING_RATE,
    MIN_PRIOR_LOSS_WEIGHT,
    MIN_RANK,
    MIN_STEPS,
    PRESETS,
    TrainingSpec,
)
from generation.models import Job, JobKind
from generation.selectors import model_info, queue_position
from generation.services.training import TrainingImageInput, TrainingRefused, training_submit
from generation.training_forms import MAX_RESOLUTION, TrainingImagesForm, TrainingSettingsForm

router = Router(tags=["trainings"])
READ_SCOPES = ("train", "read_images")

State = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class TrainingProgressOut(Schema):
    step: int
    total_steps: int
    eta_seconds: float | None = Field(description="While running, once measurable.")


class SampleOut(Schema):
    step: int
    urls: list[str] = Field(description="The sample images the trainer made at this step (PNG; same key).")


class TrainingOut(Schema):
    id: uuid.UUID
    name: str = Field(description="The LoRA's name once made (a taken name gets a -2 suffix).")
    state: State
    method: Literal["lora", "dreambooth"]
    preset: str
    steps: int
    rank: int
    learning_rate: float
    resolution: int
    train_text_encoder: bool
    instance_prompt: str
    num_images: int
    progress: TrainingProgressOut
    checkpoint_step: int = Field(description="The last checkpoint: a cancelled training keeps (and pays for) it.")
    losses: list[list[float]] = Field(description="The loss curve, [[step, loss], ...], thinned as it grows.")
    samples: list[SampleOut] = Field(description="Newest step first.")
    lora_id: uuid.UUID | None = Field(description="The LoRA it made (GET /loras/{id}).")
    cost: int = Field(description="Credits reserved; a cancelled training pays only up to its last checkpoint.")
    credits_charged: int = Field(description="Held while it waits or runs; once final, what it was charged.")
    queue_position: int | None = Field(description="1-based place in the fair-share queue while queued.")
    error: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class TrainingListOut(Schema):
    items: list[TrainingOut]
    count: int


class ListQuery(Schema):
    state: State | None = Field(None, description="Only trainings in this state.")
    limit: int = Field(20, ge=1, le=100)
    offset: int = Field(0, ge=0, le=100_000)


def _readable_by(request):
    key = require_any_scope(request, READ_SCOPES, "trainings")
    jobs = Job.objects.filter(kind=JobKind.TRAIN).select_related("training")
    if key.owner_team_id is not None:  # trainings are never a team's (see the module's docstring)
        return jobs.filter(team_id=key.owner_team_id)
    return jobs.filter(user_id=key.owner_user_id)


def _own_training(request, training_id) -> Job:
    job = _readable_by(request).filter(pk=training_id).first()
    if job is None:
        raise ApiProblem("not-found", "No training with this id is yours.")
    return job


def _losses(points) -> list[list[float]]:
    return [[int(step), float(loss)] for step, loss in points or []
            if isinstance(loss, (int, float)) and math.isfinite(loss)]


def _samples(job: Job) -> list[SampleOut]:
    samples = []
    for entry in reversed(job.training.samples or []):
        step = entry.get("step")
        urls = [reverse("api:training_sample", args=[job.pk, step, index])
                for index in range(len(entry.get("files") or []))]
        samples.append(SampleOut(step=step, urls=urls))
    return samples


def _out(job: Job) -> TrainingOut:
    training = job.training
    live = live_progress(job)
    return TrainingOut(
        id=job.pk, name=training.name, state=job.state, method=training.method, preset=training.preset,
        steps=job.steps, rank=training.rank, learning_rate=training.learning_rate, resolution=job.width,
        train_text_encoder=training.train_text_encoder, instance_prompt=job.prompt,
        num_images=training.images.count(),
        progress=TrainingProgressOut(step=live.step, total_steps=live.total_steps, eta_seconds=live.eta_seconds),
        checkpoint_step=training.checkpoint_step, losses=_losses(training.losses), samples=_samples(job),
        lora_id=training.lora_id, cost=job.cost, credits_charged=credits_charged(job),
        queue_position=queue_position(job) if job.state == "queued" else None, error=job.error,
        created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
    )


@router.get("/trainings", response={200: TrainingListOut, **problems(403, 422)}, summary="My trainings, newest first")
def training_list(request, query: Query[ListQuery]):
    jobs = _readable_by(request)
    if query.state:
        jobs = jobs.filter(state=query.state)
    page, count = page_of(jobs.order_by("-created_at", "-id"), query)
    return TrainingListOut(items=[_out(job) for job in page], count=count)


@router.get("/trainings/{training_id}", response={200: TrainingOut, **problems(403, 404, 422)},
            summary="One training: state, progress, loss curve, samples, the LoRA it made")
def training_detail(request, training_id: uuid.UUID):
    return _out(_own_training(request, training_id))


@router.get("/trainings/{training_id}/samples/{step}/{index}", url_name="training_sample",
            response={200: None, **problems(403, 404, 422)},
            openapi_extra=file_response("A sample image (PNG).", "image/png"),
            summary="A sample image the trainer made at a step")
def training_sample(request, training_id: uuid.UUID, step: int, index: int):
    name = training_selectors.sample_file(_own_training(request, training_id), step, index)
    if not name:
        raise ApiProblem("not-found", "This training has no such sample.")
    return serving.serve_file(name, "image/png")


# --- Starting one ------------------------------------------------------------------------------------

SETTING_FIELDS = ("name", "instance_prompt", "method", "preset", "rank", "learning_rate", "steps", "resolution",
                  "train_text_encoder", "instance_token", "class_prompt", "prior_preservation", "prior_loss_weight",
                  "num_class_images")
WEB_DEFAULTS = {"method": "lora", "preset": "quick", "prior_preservation": "true", "num_class_images": "20"}


def _request_body_schema() -> dict:
    integer, number, boolean = {"type": "integer"}, {"type": "number"}, {"type": "boolean"}
    properties = {
        "name": {"type": "string", "maxLength": 64, "description": "The LoRA's name: letters, digits, _ . -"},
        "instance_prompt": {"type": "string", "maxLength": MAX_CAPTION_CHARS,
                            "description": "What the pictures show, with a rare word for the new thing (zwx)."},
        "method": {"type": "string", "enum": list(METHODS), "default": "lora"},
        "preset": {"type": "string", "enum": list(PRESETS), "default": "quick",
                   "description": "Steps, rank and learning rate unless given: "
                                  + "; ".join(f"{key} {values}" for key, values in PRESETS.items())},
        "rank": {**integer, "minimum": MIN_RANK, "maximum": MAX_RANK},
        "learning_rate": {**number, "minimum": MIN_LEARNING_RATE, "maximum": MAX_LEARNING_RATE},
        "steps": {**integer, "minimum": MIN_STEPS, "maximum": MAX_STEPS},
        "resolution": {**integer, "minimum": 64, "maximum": MAX_RESOLUTION,
                       "description": "A multiple of 8; default the model's native size."},
        "train_text_encoder": boolean,
        "instance_token": {"type": "string", "maxLength": 32, "description": "DreamBooth: the rare word."},
        "class_prompt": {"type": "string", "maxLength": MAX_CLASS_PROMPTS * (MAX_CAPTION_CHARS + 1),
                         "description": "DreamBooth's prior: one class prompt, or several, one per line "
                                        "(the class images are spread over them)."},
        "prior_preservation": {**boolean, "default": True, "description": "DreamBooth."},
        "prior_loss_weight": {**number, "minimum": MIN_PRIOR_LOSS_WEIGHT, "maximum": MAX_PRIOR_LOSS_WEIGHT,
                              "default": TrainingSpec.prior_loss_weight,
                              "description": "DreamBooth: the prior's loss weight beside the pictures'."},
        "num_class_images": {**integer, "minimum": 1, "maximum": MAX_CLASS_IMAGES, "default": 20},
        "captions": {"type": "string", "description": "A JSON array of strings, one per picture in order; "
                                                      "default: every caption is the instance prompt."},
        "images": {"type": "array", "minItems": MIN_IMAGES, "maxItems": MAX_IMAGES,
                   "items": {"type": "string", "format": "binary"},
                   "description": f"{MIN_IMAGES} to {MAX_IMAGES} pictures (PNG, JPEG or WebP)."},
    }
    schema = {"type": "object", "required": ["name", "instance_prompt", "images"], "properties": properties}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


def _field_problem(field: str, message: str) -> ApiProblem:
    loc = ["body", field] if field else ["body"]
    return ApiProblem("validation-error", f"{field or 'request'}: {message}",
                      errors=[{"loc": loc, "msg": message, "type": "invalid"}])


def _captions(raw: str | None, count: int, instance_prompt: str) -> list[str]:
    if raw is None or raw == "":
        return [instance_prompt] * count
    try:
        captions = json.loads(raw)
    except ValueError:
        raise _field_problem("captions", "not a JSON array") from None
    if not isinstance(captions, list) or not all(isinstance(caption, str) for caption in captions):
        raise _field_problem("captions", "must be a JSON array of strings")
    if len(captions) != count:
        raise _field_problem("captions", f"{len(captions)} captions for {count} pictures: give one per picture")
    return captions


def _settings_data(post, captions: list[str]) -> dict:
    data = {**WEB_DEFAULTS, **{name: post.get(name) for name in SETTING_FIELDS if post.get(name) is not None}}
    data.update({f"caption_{index}": caption for index, caption in enumerate(captions)})
    return data


def _refusal_problem(error: TrainingRefused) -> ApiProblem:
    if error.status == 403:
        return ApiProblem("forbidden", error.message)
    if error.status == 409:
        return ApiProblem("conflict", error.message)
    return _field_problem(error.field, error.message)


def _checked_submit(request, key) -> Job:
    """The web's two forms over this request, then training_submit (raises problems)."""
    post = request.POST
    pictures = TrainingImagesForm({"instance_prompt": post.get("instance_prompt", "")}, request.FILES,
                                  user=key.owner_user, gallery=[])
    if not pictures.is_valid():
        raise form_problem(pictures)
    instance_prompt = pictures.cleaned_data["instance_prompt"]
    captions = _captions(post.get("captions"), len(pictures.pictures), instance_prompt)
    info = model_info()
    settings = TrainingSettingsForm(_settings_data(post, captions), image_count=len(captions),
                                    native_resolution=min(info.native_width, info.native_height),
                                    may_full_finetune=False, instance_prompt=instance_prompt)
    if not settings.is_valid():
        raise form_problem(settings, field_names={f"caption_{index}": "captions" for index in range(len(captions))})
    images = [TrainingImageInput(png=png, caption=caption)
              for (png, _source), caption in zip(pictures.pictures, settings.captions(), strict=True)]
    try:
        return training_submit(user=key.owner_user, name=settings.cleaned_data["name"],
                               spec_fields=settings.spec_fields(), images=images, api_key=key)
    except InvalidRequest as error:
        raise _field_problem(error.field, error.message) from None
    except TrainingRefused as error:
        raise _refusal_problem(error) from None
    except SUBMIT_REFUSALS as error:
        raise submit_problem(error) from error


def _fingerprint(request) -> str:
    uploads = request.FILES.getlist("images")
    files = {}
    for index, upload in enumerate(uploads):
        files[f"images[{index}]"] = upload.read()
        upload.seek(0)
    body = {name: request.POST.getlist(name) for name in request.POST}
    return request_fingerprint(request, body, files)


@router.post(
    "/trainings", response={202: TrainingOut, **problems(400, 402, 403, 409, 415, 422)},
    openapi_extra=_request_body_schema(), summary="Start a training (LoRA or DreamBooth) from 3 to 50 pictures",
    description=(
        "multipart/form-data: the pictures as `images` (repeat the field), the name, the instance prompt, a "
        "method and a preset (or its settings one by one). Reserves the credits and answers at once (202) with "
        "the training, its cost and queue place. A user's key only: a training bills its user. Send an "
        "`Idempotency-Key` header to retry safely."
    ),
)
def training_create(request, response: HttpResponse):
    key = require_scope(request, "train")
    if key.owner_team_id is not None:
        raise ApiProblem("forbidden", "A team key cannot start a training: a training and its LoRA belong to a "
                                      "user and bill their wallet. Use a personal key with the 'train' scope.")
    if request.content_type != "multipart/form-data":
        raise ApiProblem("unsupported-media-type", "Send multipart/form-data with the pictures as 'images'.")
    idempotency_key = idempotency_key_of(request)
    submitted = submit_once(key=key, idempotency_key=idempotency_key, fingerprint=_fingerprint(request),
                            submit=lambda: _checked_submit(request, key))
    job = _readable_by(request).get(pk=submitted.job.pk)
    created_headers(response, job=job, key=key, replayed=submitted.replayed, location=f"/api/v1/trainings/{job.pk}")
    return Status(202, _out(job))


@router.post("/trainings/{training_id}/cancel", response={200: TrainingOut, **problems(403, 404, 409, 422)},
             summary="Cancel a training: a queued one at once (refunded), a running one at its next step "
                     "(it keeps, and pays for, the LoRA of its last checkpoint)")
def training_cancel(request, training_id: uuid.UUID, response: HttpResponse):
    key = require_scope(request, "train")
    job = cancel_active(_own_training(request, training_id), what="training")
    job = _readable_by(request).get(pk=job.pk)
    spend_headers(response, job=job, key=key)
    return _out(job)
