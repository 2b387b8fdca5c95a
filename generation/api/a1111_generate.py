"""AUTOMATIC1111's txt2img and img2img (`/sdapi/v1/...`): synchronous for the client, asynchronous here.

A1111's clients post a request and wait for its images in the answer. Here the request becomes an
ordinary job (the web's own forms validate it, job_submit reserves its credits with the key), and
the view, an async one served by daphne, waits for the job's final state without holding a thread:
it listens on the job's channel-layer group (generation.events.job_group, `job.state` events) and
re-reads the row every RECHECK_SECONDS in case an event was lost (the DB is the source of truth).

A client that hangs up while waiting (Django cancels the view: asyncio.CancelledError), or a wait
longer than STUDIO_A1111_WAIT_SECONDS, cancels the job: a queued one at once and refunded, a running
one at its next step, released and not charged (queue.job_mark_cancelled).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import logging
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.http import HttpResponse
from ninja import Field, Router, Schema
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError

from accounts.api import ApiProblem, problems, require_scope
from generation import events
from generation.api.submit import (
    idempotency_key_of,
    job_from_form,
    key_actor,
    request_fingerprint,
    spend_headers,
    submit_once,
)
from generation.canvas_forms import CanvasForm
from generation.engine.contracts import SAMPLERS
from generation.forms import CreateForm
from generation.models import Job, JobMode, JobState, SDModel
from generation.selectors import default_model, model_info, models_offered
from generation.services import jobs as job_services

log = logging.getLogger(__name__)
router = Router(tags=["AUTOMATIC1111"])

RECHECK_SECONDS = 5.0  # the DB re-read while waiting, in case a job.state event was lost
DEFAULT_WAIT_SECONDS = 600
# The web form's field -> A1111's name for it, so a refusal points at what the client sent.
FIELD_NAMES = {
    "guidance_scale": "cfg_scale", "sampler": "sampler_name", "num_images": "batch_size", "aspect": "width",
    "source": "init_images", "strength": "denoising_strength", "masked_content": "inpainting_fill",
    "only_masked": "inpaint_full_res", "only_masked_padding": "inpaint_full_res_padding", "save_to": "override_settings",
}
INPAINTING_FILL = {0: "fill", 1: "original", 2: "latent_noise"}  # 3, "latent nothing", is not offered
A1111_SCHEDULERS = {"karras": "Karras"}  # A1111 >= 1.9 names the schedule apart: "DPM++ 2M" + "Karras"


# --- The request, as A1111 spells it (modules/api/models.py) ------------------------------------------

class Txt2ImgIn(Schema):
    """A1111's StableDiffusionTxt2ImgProcessingAPI. Fields it has that change nothing here (eta,
    s_churn, do_not_save_grid, ...) are accepted and ignored; those asking for something this studio
    does not do (hires fix, face restoration, tiling, scripts, styles, variation seeds) are refused."""

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] = Field(default_factory=list)
    seed: int = Field(-1, description="-1: random. Image i of a batch uses seed + i.")
    subseed_strength: float = 0
    sampler_name: str | None = Field(None, description="A1111's label (GET /sdapi/v1/samplers), e.g. `Euler a`.")
    sampler_index: str | None = Field(None, description="A1111's older name for sampler_name.")
    scheduler: str | None = Field(None, description="A1111 1.9's schedule type: `Automatic` or `Karras`.")
    batch_size: int = Field(1, ge=1, description="batch_size × n_iter images, at most 4 in all.")
    n_iter: int = Field(1, ge=1)
    steps: int | None = Field(None, description="Omitted: the model's default.")
    cfg_scale: float | None = Field(None, description="Omitted: the model's default.")
    width: int | None = Field(None, description="Omitted (with height): the model's native size.")
    height: int | None = None
    restore_faces: bool | None = None
    tiling: bool | None = None
    enable_hr: bool = False
    override_settings: dict = Field(default_factory=dict, description=(
        "Only `sd_model_checkpoint` is read: it must name the model this studio serves."))
    script_name: str | None = None
    alwayson_scripts: dict = Field(default_factory=dict)
    send_images: bool = Field(True, description="False: `images` comes back empty (the images are in the gallery).")
    save_images: bool = Field(False, description="Ignored: every image is saved to the key's gallery.")


class Img2ImgIn(Txt2ImgIn):
    """A1111's StableDiffusionImg2ImgProcessingAPI: one init image; with a mask it inpaints."""

    init_images: list[str] = Field(description="One base64 image (PNG, JPEG or WebP; a data: URL too).")
    resize_mode: int = Field(0, description="0 only: the source is resized to width × height when both are given.")
    denoising_strength: float = 0.75
    mask: str | None = Field(None, description="Base64 PNG: white is repainted.")
    mask_blur: int = 4
    inpainting_fill: int = Field(0, description="0 fill, 1 original, 2 latent noise (3, latent nothing, is not offered).")
    inpaint_full_res: bool = Field(True, description="True: repaint a crop around the mask at the model's size.")
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = Field(0, description="1: repaint what is black in the mask.")


class ImagesOut(Schema):
    images: list[str] = Field(description="Base64 PNGs, each with its generation parameters embedded.")
    parameters: dict = Field(description="The request as received (init_images and mask left out).")
    info: str = Field(description="A JSON string, as A1111 returns it (prompt, all_seeds, infotexts, ...).")


def refused(field: str, message: str) -> ApiProblem:
    return ApiProblem("validation-error", f"{field}: {message}",
                      errors=[{"loc": ["body", field], "msg": message, "type": "value_error"}])


# --- Into the web's forms -----------------------------------------------------------------------------

def sampler_key(body: Txt2ImgIn) -> str | None:
    """Our sampler for A1111's label (or our own key), with A1111 1.9's separate scheduler."""
    name = body.sampler_name or body.sampler_index
    if not name:
        return None
    scheduler = (body.scheduler or "").strip().lower()
    if scheduler in A1111_SCHEDULERS and not name.lower().endswith(scheduler):
        name = f"{name} {A1111_SCHEDULERS[scheduler]}"
    elif scheduler not in ("", "automatic"):
        raise refused("scheduler", f"{body.scheduler!r} is not offered; send Automatic or Karras.")
    by_name = {label.lower(): key for key, label in SAMPLERS.items()} | {key: key for key in SAMPLERS}
    if name.lower() not in by_name:
        raise refused("sampler_name", f"{name!r} is not a sampler here; choose one of {', '.join(SAMPLERS.values())}.")
    return by_name[name.lower()]


def check_supported(body: Txt2ImgIn, user=None) -> None:
    """Refuse, clearly, what A1111 does and this studio does not (rather than ignore it silently)."""
    unsupported = [
        ("enable_hr", body.enable_hr, "hires fix is not offered"),
        ("restore_faces", body.restore_faces, "face restoration is not offered"),
        ("tiling", body.tiling, "tiling is not offered"),
        ("script_name", body.script_name, "scripts are not offered"),
        ("alwayson_scripts", body.alwayson_scripts, "scripts (ControlNet, ...) are not offered"),
        ("styles", body.styles, "saved styles are not offered; put their text in the prompt"),
        ("subseed_strength", body.subseed_strength, "variation seeds are not offered"),
    ]
    for field, value, why in unsupported:
        if value:
            raise refused(field, why)
    checkpoint = body.override_settings.get("sd_model_checkpoint")
    if checkpoint and checkpoint_named(checkpoint, user) is None:
        raise refused("override_settings", f"no checkpoint {checkpoint!r} is offered here (GET "
                                           f"/sdapi/v1/sd-models lists them).")
    if body.batch_size * body.n_iter > 4:
        raise refused("batch_size", f"batch_size × n_iter is at most 4 images per request, not "
                                    f"{body.batch_size * body.n_iter}.")


def checkpoint_title(model: SDModel) -> str:
    """A1111's title of a checkpoint: "name [hash]"."""
    return f"{model.name} [{model.hash}]"


def checkpoint_named(checkpoint: str, user=None) -> SDModel | None:
    """The model offered to `user` that an A1111 `sd_model_checkpoint` names: by title, name or hash."""
    wanted = str(checkpoint).strip()
    for model in models_offered(user):
        if wanted in (checkpoint_title(model), model.name, model.hash, model.model_info().name):
            return model
    return None


def requested_model(body: Txt2ImgIn, user=None):
    """override_settings.sd_model_checkpoint's model (check_supported refused an unknown one), else the default."""
    checkpoint = body.override_settings.get("sd_model_checkpoint")
    return (checkpoint_named(checkpoint, user) if checkpoint else None) or default_model()


def form_data(body: Txt2ImgIn, *, team, user=None) -> dict:
    """The web form's fields for an A1111 request (a team key saves into its team, on its wallet)."""
    model = requested_model(body, user)
    info = model_info(model)
    data = {
        "model": model.name if model is not None else "", "prompt": body.prompt, "negative_prompt": body.negative_prompt, "aspect": "1:1",
        "width": body.width, "height": body.height,
        "steps": body.steps if body.steps is not None else info.default_steps,
        "guidance_scale": body.cfg_scale if body.cfg_scale is not None else info.default_guidance_scale,
        "sampler": sampler_key(body) or info.default_sampler,
        "seed": None if body.seed == -1 else body.seed, "num_images": body.batch_size * body.n_iter,
        "save_to": str(team.pk) if team is not None else "", "bill_team": team is not None,
    }
    return {key: ("" if value is None else value) for key, value in data.items()}


def decode_picture(field: str, value: str) -> bytes:
    if value.startswith("data:"):
        value = value.partition(",")[2]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise refused(field, "not valid base64") from None


def _resized_png(data: bytes, size: tuple[int, int], *, invert: bool = False) -> bytes:
    """A1111's resize_mode 0 ("just resize") and inpainting_mask_invert, on a decoded picture. The
    upload service still checks the result like any upload; unreadable input is left to it."""
    try:
        picture = PILImage.open(io.BytesIO(data))
        picture.load()
    except (UnidentifiedImageError, OSError, PILImage.DecompressionBombError):
        return data
    if picture.size != size:
        picture = picture.resize(size, PILImage.Resampling.LANCZOS)
    if invert:
        picture = ImageOps.invert(picture.convert("L"))
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()


def canvas_uploads(body: Img2ImgIn) -> dict[str, SimpleUploadedFile]:
    if len(body.init_images) != 1:
        raise refused("init_images", f"send exactly one image, not {len(body.init_images)}.")
    if body.resize_mode != 0:
        raise refused("resize_mode", "only 0 (just resize) is offered.")
    if body.inpainting_fill not in INPAINTING_FILL:
        raise refused("inpainting_fill", "0 (fill), 1 (original) or 2 (latent noise); latent nothing is not offered.")
    source = decode_picture("init_images", body.init_images[0])
    mask = decode_picture("mask", body.mask) if body.mask else None
    if body.width is not None and body.height is not None and min(body.width, body.height) > 0:
        size = (body.width, body.height)
        source = _resized_png(source, size)
        mask = _resized_png(mask, size, invert=bool(body.inpainting_mask_invert)) if mask else None
    elif mask and body.inpainting_mask_invert:
        mask = _resized_png(mask, PILImage.open(io.BytesIO(mask)).size, invert=True)
    uploads = {"source": SimpleUploadedFile("source.png", source)}
    if mask is not None:
        uploads["mask"] = SimpleUploadedFile("mask.png", mask)
    return uploads


def bound_form(body: Txt2ImgIn, *, actor) -> CreateForm:
    team = actor.team
    private_user = actor.user if team is None else None  # a team key acts for the team: no private models
    check_supported(body, private_user)
    teams = [team] if team is not None else []
    data = form_data(body, team=team, user=private_user)
    info, offered = model_info(), models_offered(private_user)
    if not isinstance(body, Img2ImgIn):
        return CreateForm(data, model_info=info, teams=teams, user=actor.user, models=offered)
    uploads = canvas_uploads(body)
    data.update(mode=JobMode.INPAINT if "mask" in uploads else JobMode.IMG2IMG, source_image="",
                strength=body.denoising_strength, mask_blur=body.mask_blur,
                masked_content=INPAINTING_FILL[body.inpainting_fill], only_masked=body.inpaint_full_res,
                only_masked_padding=body.inpaint_full_res_padding,
                outpaint_left=0, outpaint_top=0, outpaint_right=0, outpaint_bottom=0)
    return CanvasForm(data, uploads, model_info=info, teams=teams, user=actor.user, models=offered)


# --- Submitting (sync: the database) --------------------------------------------------------------------

@dataclass(frozen=True)
class Started:
    job: Job
    replayed: bool


def submit(request, body: Txt2ImgIn) -> Started:
    key = require_scope(request, "generate")
    idempotency_key = idempotency_key_of(request)
    actor = key_actor(key)

    fingerprint = request_fingerprint(request, body.model_dump(mode="json"))
    submitted = submit_once(key=key, idempotency_key=idempotency_key, fingerprint=fingerprint,
                            submit=lambda: job_from_form(bound_form(body, actor=actor), actor=actor, key=key,
                                                         field_names=FIELD_NAMES))
    return Started(job=submitted.job, replayed=submitted.replayed)


def cancel(job_id) -> Job:
    return job_services.job_cancel(job=Job.objects.get(pk=job_id))


def final_job(job_id) -> Job | None:
    job = Job.objects.get(pk=job_id)
    return job if job.is_final else None


# --- Waiting (async: no thread held) ---------------------------------------------------------------------

class WaitTimedOut(Exception):
    pass


async def _state_event(layer, channel: str) -> None:
    """Returns at the next job.state event on `channel` (progress events are skipped)."""
    while True:
        message = await layer.receive(channel)
        if message.get("type") == "job.state":
            return


async def _subscribe(group: str):
    """(layer, channel) listening to `group`, or (None, None) when the channel layer is down: the
    wait then reads the database alone."""
    try:
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        return layer, channel
    except Exception as error:  # noqa: BLE001 - events are a shortcut; the DB re-check still ends the wait
        log.warning("A1111 wait without live events (%s: %s); re-reading the job instead", type(error).__name__, error)
        return None, None


async def wait_until_final(job_id, *, timeout: float, recheck: float | None = None) -> Job:
    """The job once final: woken by its job.state events, re-read every `recheck` seconds anyway
    (RECHECK_SECONDS). Raises WaitTimedOut after `timeout` seconds."""
    recheck = recheck or RECHECK_SECONDS
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    group = events.job_group(job_id)
    layer, channel = await _subscribe(group)  # before the first read: no event can slip between
    try:
        while True:
            job = await sync_to_async(final_job)(job_id)
            if job is not None:
                return job
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise WaitTimedOut
            pause = min(recheck, remaining)
            if layer is None:
                await asyncio.sleep(pause)
                continue
            try:
                await asyncio.wait_for(_state_event(layer, channel), timeout=pause)
            except TimeoutError:
                pass
            except Exception as error:  # noqa: BLE001 - the layer failed mid-wait: poll the DB from now on
                log.warning("A1111 wait lost live events (%s); re-reading the job instead", error)
                layer = None
    finally:
        if layer is not None:
            try:
                await asyncio.shield(layer.group_discard(group, channel))
            except Exception:  # noqa: BLE001 - the group's membership expires on its own
                pass


async def wait_or_cancel(job_id) -> Job:
    """wait_until_final, cancelling the job when the client leaves or the wait times out."""
    timeout = getattr(settings, "STUDIO_A1111_WAIT_SECONDS", DEFAULT_WAIT_SECONDS)
    try:
        return await wait_until_final(job_id, timeout=timeout)
    except asyncio.CancelledError:  # the client disconnected: no one will collect these images
        await asyncio.shield(sync_to_async(cancel)(job_id))
        raise
    except WaitTimedOut:
        job = await sync_to_async(cancel)(job_id)
        raise ApiProblem("timeout", f"The job did not finish within {timeout:g} s, so it was cancelled "
                                    f"({'refunded' if job.state == JobState.CANCELLED else 'not charged'}); "
                                    "try again later.", job_id=str(job_id)) from None


# --- The answer, as A1111 spells it ----------------------------------------------------------------------

def _timestamp(job: Job) -> str:
    moment = job.started_at or job.created_at
    return moment.strftime("%Y%m%d%H%M%S")


def a1111_info(job: Job, images) -> dict:
    """A1111's Processed.js(): what its clients read from `info`."""
    count = len(images)
    return {
        "prompt": job.prompt, "all_prompts": [job.prompt] * count,
        "negative_prompt": job.negative_prompt, "all_negative_prompts": [job.negative_prompt] * count,
        "seed": job.seed, "all_seeds": [image.seed for image in images],
        "subseed": job.seed, "all_subseeds": [image.seed for image in images], "subseed_strength": 0,
        "width": job.width, "height": job.height, "sampler_name": SAMPLERS.get(job.sampler, job.sampler),
        "cfg_scale": job.guidance_scale, "steps": job.steps, "batch_size": job.num_images,
        "restore_faces": False, "face_restoration_model": None,
        "sd_model_name": job.model_name, "sd_model_hash": job.model_hash, "sd_vae_name": None, "sd_vae_hash": None,
        "seed_resize_from_w": -1, "seed_resize_from_h": -1,
        "denoising_strength": job.strength if job.mode != JobMode.TXT2IMG else None,
        "extra_generation_params": {}, "index_of_first_image": 0,
        "infotexts": [image.infotext for image in images], "styles": [], "job_timestamp": _timestamp(job),
        "clip_skip": 1, "is_using_inpainting_conditioning": False, "job_id": str(job.pk),
    }


def answer(job: Job, body: Txt2ImgIn, *, key, response: HttpResponse, replayed: bool) -> ImagesOut:
    """The finished job as A1111's answer, or the problem that says why there are no images."""
    if job.state == JobState.FAILED:
        raise ApiProblem("job-failed", f"The job failed: {job.error or 'no reason recorded'}. It was not charged.",
                         job_id=str(job.pk), error=job.error)
    if job.state == JobState.CANCELLED:
        raise ApiProblem("conflict", f"The job was cancelled before it finished ({job.error}); it was not charged.",
                         job_id=str(job.pk))
    images = list(job.images.order_by("index"))
    encoded = [_base64_file(image.file.name) for image in images] if body.send_images else []
    spend_headers(response, job=job, key=key)
    if replayed:
        response["Idempotent-Replayed"] = "true"
    parameters = body.model_dump(mode="json")
    parameters.update({name: None for name in ("init_images", "mask") if name in parameters})
    return ImagesOut(images=encoded, parameters=parameters, info=json.dumps(a1111_info(job, images)))


def _base64_file(name: str) -> str:
    with default_storage.open(name, "rb") as handle:
        return base64.b64encode(handle.read()).decode("ascii")


GENERATE_PROBLEMS = problems(402, 403, 409, 422, 502, 504)
WAIT_NOTE = (
    " Synchronous, as in A1111: the answer comes once the job is done (it queues with everyone else's). "
    "A client that hangs up cancels its job (refunded, or not charged if running); a wait longer than "
    "the server's limit cancels it too and answers 504. `Idempotency-Key` makes a retry return the same "
    "job's images, charged once."
)


async def submit_or_cancel(request, body: Txt2ImgIn) -> Started:
    """submit, in a thread that finishes even if the client leaves meanwhile: its job is then cancelled."""
    submitting = asyncio.ensure_future(sync_to_async(submit)(request, body))
    try:
        return await asyncio.shield(submitting)
    except asyncio.CancelledError:
        try:
            started = await submitting
        except Exception:  # noqa: BLE001 - refused: no job to cancel
            raise asyncio.CancelledError from None
        await sync_to_async(cancel)(started.job.pk)
        raise


async def generate(request, body: Txt2ImgIn, response: HttpResponse) -> ImagesOut:
    started = await submit_or_cancel(request, body)
    job = await wait_or_cancel(started.job.pk)
    return await sync_to_async(answer)(job, body, key=request.auth, response=response, replayed=started.replayed)


@router.post("/txt2img", response={200: ImagesOut, **GENERATE_PROBLEMS}, summary="A1111: text to image",
             description="A1111's txt2img: the images as base64 PNGs with `parameters` and `info`." + WAIT_NOTE)
async def txt2img(request, body: Txt2ImgIn, response: HttpResponse):
    return await generate(request, body, response)


@router.post("/img2img", response={200: ImagesOut, **GENERATE_PROBLEMS}, summary="A1111: image to image, inpaint",
             description="A1111's img2img: one init image; with `mask`, inpainting." + WAIT_NOTE)
async def img2img(request, body: Img2ImgIn, response: HttpResponse):
    return await generate(request, body, response)
