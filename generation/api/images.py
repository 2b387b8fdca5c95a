"""/images: a key's images, their parameters, the original PNG, delete.

A user's key sees its user's own images ("My images", wherever they are shared); a team's key the
team's gallery. Anything else is a 404, the same answer as an image that does not exist. Reading
needs `read_images` (or `generate`: a client that makes pictures may fetch them); deleting needs
`read_images` and the web's permission (generation.permissions.can_delete_image: the owner, or in
a team gallery its admins; a team key acts as the admin who made it).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from django.urls import reverse
from ninja import Field, Query, Router, Schema, Status

from accounts.api import ApiProblem, problems, require_scope
from generation import permissions, serving
from generation.api.common import file_response, page_of, require_any_scope
from generation.api.submit import key_actor
from generation.models import Image
from generation.services import image_delete

router = Router(tags=["images"])
READ_SCOPES = ("read_images", "generate")


class ImageLoraOut(Schema):
    name: str
    sha256: str
    weight: float


class ImageDetailOut(Schema):
    id: uuid.UUID
    generation_id: uuid.UUID
    index: int = Field(description="Its place among its generation's images.")
    seed: int
    width: int
    height: int
    prompt: str
    negative_prompt: str
    steps: int
    guidance_scale: float
    sampler: str
    model_name: str
    model_hash: str
    mode: str
    loras: list[ImageLoraOut]
    parameters: str = Field(description="The A1111 'parameters' text embedded in the PNG.")
    team_id: uuid.UUID | None
    favourite: bool
    created_at: datetime
    file_url: str = Field(description="The original PNG (with its parameters): GET it with the same key.")


class ImageListOut(Schema):
    items: list[ImageDetailOut]
    count: int


class ImageListQuery(Schema):
    generation_id: uuid.UUID | None = Field(None, description="Only this generation's images.")
    favourite: bool | None = None
    limit: int = Field(24, ge=1, le=100)
    offset: int = Field(0, ge=0, le=100_000)


def _readable(request):
    key = require_any_scope(request, READ_SCOPES, "images")
    images = Image.objects.select_related("job")
    if key.owner_team_id is not None:
        return images.filter(team_id=key.owner_team_id)
    return images.filter(owner_id=key.owner_user_id)


def _own_image(request, image_id) -> Image:
    image = _readable(request).filter(pk=image_id).first()
    if image is None:
        raise ApiProblem("not-found", "No image with this id is yours.")
    return image


def _out(image: Image) -> ImageDetailOut:
    job = image.job
    return ImageDetailOut(
        id=image.pk, generation_id=job.pk, index=image.index, seed=image.seed, width=image.width,
        height=image.height, prompt=job.prompt, negative_prompt=job.negative_prompt, steps=job.steps,
        guidance_scale=job.guidance_scale, sampler=job.sampler, model_name=job.model_name,
        model_hash=job.model_hash, mode=job.mode,
        loras=[ImageLoraOut(name=lora["name"], sha256=lora["sha256"], weight=lora["weight"]) for lora in job.loras],
        parameters=image.infotext, team_id=image.team_id, favourite=image.favourite, created_at=image.created_at,
        file_url=reverse("api:image_file", args=[image.pk]),
    )


@router.get("/images", response={200: ImageListOut, **problems(403, 422)}, summary="My images, newest generation first (its images in order)")
def image_list(request, query: Query[ImageListQuery]):
    images = _readable(request)
    if query.generation_id is not None:
        images = images.filter(job_id=query.generation_id)
    if query.favourite is not None:
        images = images.filter(favourite=query.favourite)
    page, count = page_of(images.order_by("-job__created_at", "job_id", "index"), query)
    return ImageListOut(items=[_out(image) for image in page], count=count)


@router.get("/images/{image_id}", response={200: ImageDetailOut, **problems(403, 404, 422)},
            summary="One image: its parameters and where to download it")
def image_detail(request, image_id: uuid.UUID):
    return _out(_own_image(request, image_id))


@router.get("/images/{image_id}/file", url_name="image_file",
            response={200: None, **problems(403, 404, 422)},
            openapi_extra=file_response("The original PNG, its parameters in a tEXt chunk.", "image/png"),
            summary="Download the original PNG (with its parameters)")
def image_file(request, image_id: uuid.UUID):
    image = _own_image(request, image_id)
    return serving.image_original(image, download="download" in request.GET)


@router.delete("/images/{image_id}", response={204: None, **problems(403, 404, 422)},
               summary="Delete an image (and its file)")
def image_remove(request, image_id: uuid.UUID):
    key = require_scope(request, "read_images")
    image = _own_image(request, image_id)
    if not permissions.can_delete_image(key_actor(key).user, image):
        raise ApiProblem("forbidden", "Only the image's owner, or in a team gallery the team's admins, may delete it.")
    image_delete(image=image)
    return Status(204, None)
