"""Training jobs: submitting a fine-tuning run, and the worker's lease-fenced writes while it runs.

A training is a Job of kind TRAIN with a Training row (its settings and live record) and its
TrainingImages. It goes through the same queue of record as generation (docs/fine-tuning.md,
"Training jobs"): claimed under a lease, renewed by heartbeats, swept when its worker dies and
run again, resuming from its last checkpoint. Its credits are reserved at submit and settled
exactly once, by whichever lease-fenced service finishes it:

    training_succeed         capture the whole cost; the LoRA of the result
    training_mark_cancelled  capture pro rata for the steps of the last checkpoint, release the
                             rest; the LoRA of the last checkpoint (none and nothing charged
                             before the first checkpoint)
    training_fail            release everything

Files: the pictures as trainings/<user>/<job>/<index>.png, checkpoints (a resumable state and the
LoRA as of that step) and samples beside them. Storage has no rollback, so a file is written
before its row names it and removed again when the row is not written.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction

from billing import services as billing
from generation import events, permissions
from generation.engine.contracts import InvalidRequest
from generation.engine.training.spec import (
    MAX_CAPTION_CHARS,
    MAX_STEPS,
    TrainingCheckpoint,
    TrainingResult,
    TrainingSpec,
    lora_targets_of,
    token_embeddings_of,
    validate_spec,
)
from generation.engine.training.spec import TrainingImage as SpecImage
from generation.models import Image, Job, JobKind, JobState, LoRA, LoRASource, Training, TrainingImage
from generation.selectors import model_path, own_model_info
from generation.services import sd_models, wakeup
from generation.services.files import files_delete_now, files_delete_on_commit
from generation.services.jobs import TooManyActiveJobs, _lock_user_for_submit
from generation.services.loras import lora_create_from_bytes, lora_name_problem
from generation.services.queue import Lease, LeaseLost, _locked_leased_job, finish, lease_expiry

logger = logging.getLogger(__name__)

MAX_TRAINING_RESOLUTION = 1024
MAX_VALIDATION_PROMPTS = 4
MAX_VALIDATION_SEEDS = 4
MAX_LOSS_POINTS = 400  # Training.losses is thinned to about this many [step, loss] points
# Settings the Training row keeps; the Job keeps steps, resolution (width), seed and instance prompt.
TRAINING_ROW_FIELDS = ("method", "rank", "learning_rate", "train_text_encoder", "instance_token", "class_prompt",
                       "class_prompts", "prior_preservation", "prior_loss_weight", "num_class_images",
                       "full_finetune", "checkpoint_every", "sample_every")
# The settings a submit may give (TrainingSpec fields; the rest are the trainer's defaults), and the preset's name.
SPEC_FIELDS = frozenset(TRAINING_ROW_FIELDS) | {"steps", "resolution", "seed", "instance_prompt",
                                                 "validation_prompts", "validation_seeds"}
SUBMIT_FIELDS = SPEC_FIELDS | {"preset"}


class TrainingRefused(Exception):
    """A training that is not started; ``message`` is for the user, ``field`` the form field it is
    about ("" for the whole form), ``status`` the HTTP answer. Nothing was charged or stored."""

    def __init__(self, message: str, *, field: str = "", status: int = 400):
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status


@dataclass(frozen=True)
class TrainingImageInput:
    png: bytes  # checked, re-encoded PNG bytes (generation.services.uploads made them)
    caption: str
    source_image: Image | None = None  # the studio image it was picked from, if any


# --- Price ----------------------------------------------------------------------------------------

def _prior(method: str, num_class_images: int) -> bool:
    return method == "dreambooth" and num_class_images > 0


def training_cost(*, method: str, steps: int, resolution: int, num_images: int, num_class_images: int = 0,
                  train_text_encoder: bool = False) -> int:
    """Credits for a training on the model that serves now (billing prices plain numbers).

    Prior preservation doubles each step's batch (an instance and a class image) and first
    generates `num_class_images` at the samples' step count. The number of pictures does not
    change the price (each is encoded once)."""
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 0:
        raise ValueError(f"num_images must be a whole number >= 0, not {num_images!r}")
    prior = _prior(method, num_class_images)
    return billing.training_price(
        steps=steps, resolution=resolution, batch=2 if prior else 1,
        train_text_encoder=train_text_encoder, class_images=num_class_images if prior else 0,
        class_image_steps=TrainingSpec.sample_steps if prior else 0, model_name=own_model_info().name,
    )


# --- Submit (web side) ----------------------------------------------------------------------------

def _spec_from(spec_fields: dict, images: list[TrainingImageInput]) -> TrainingSpec:
    unknown = sorted(set(spec_fields) - SUBMIT_FIELDS)
    if unknown:
        raise InvalidRequest(unknown[0], "is not a training setting")
    fields = {key: value for key, value in spec_fields.items() if key in SPEC_FIELDS}
    for key in ("validation_prompts", "validation_seeds", "class_prompts"):
        if key in fields:
            if not isinstance(fields[key], (list, tuple)):
                raise InvalidRequest(key, "must be a list")
            fields[key] = tuple(fields[key])
    spec_images = []
    for number, image in enumerate(images, 1):
        if not isinstance(image, TrainingImageInput) or not isinstance(image.png, bytes) or not image.png:
            raise InvalidRequest("images", f"image {number} is not a picture")
        caption = image.caption.strip() if isinstance(image.caption, str) else image.caption
        spec_images.append(SpecImage(png=image.png, caption=caption))
    try:
        spec = TrainingSpec(base_model_path=str(model_path()), images=tuple(spec_images), **fields)
    except TypeError as error:
        raise InvalidRequest("settings", str(error)) from None
    try:
        validate_spec(spec)
    except InvalidRequest as error:  # the form and the API give the class prompts as one field
        if error.field != "class_prompts":
            raise
        raise InvalidRequest("class_prompt", error.message) from None
    _validate_studio_limits(spec)
    return spec


def _whole(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _validate_studio_limits(spec: TrainingSpec) -> None:
    """What the studio adds to the trainer's own checks (validate_spec)."""
    if spec.resolution > MAX_TRAINING_RESOLUTION:
        raise InvalidRequest("resolution", f"must be at most {MAX_TRAINING_RESOLUTION}")
    for key in ("checkpoint_every", "sample_every"):  # more than the steps: only at the end
        if not _whole(getattr(spec, key), 0, MAX_STEPS):
            raise InvalidRequest(key, f"must be a whole number of steps from 0 (only at the end) to {MAX_STEPS}")
    if not _whole(spec.seed, 0, 2**32 - 1):
        raise InvalidRequest("seed", "must be a whole number from 0 to 4294967295")
    if len(spec.validation_prompts) > MAX_VALIDATION_PROMPTS or not all(
            isinstance(p, str) and p.strip() and len(p) <= MAX_CAPTION_CHARS for p in spec.validation_prompts):
        raise InvalidRequest("validation_prompts", f"give up to {MAX_VALIDATION_PROMPTS} prompts of at most "
                                                   f"{MAX_CAPTION_CHARS} characters")
    if not 1 <= len(spec.validation_seeds) <= MAX_VALIDATION_SEEDS or not all(
            _whole(seed, 0, 2**32 - 1) for seed in spec.validation_seeds):
        raise InvalidRequest("validation_seeds", f"give 1 to {MAX_VALIDATION_SEEDS} seeds (whole numbers >= 0)")
    if len(spec.instance_prompt) > MAX_CAPTION_CHARS or len(spec.class_prompt) > MAX_CAPTION_CHARS:
        raise InvalidRequest("instance_prompt", f"prompts are at most {MAX_CAPTION_CHARS} characters")
    if len(spec.instance_token) > 32:
        raise InvalidRequest("instance_token", "is at most 32 characters")


def _check_name(user, name) -> str:
    name = (name or "").strip() if isinstance(name, str) else name
    problem = lora_name_problem(name)
    if problem:
        raise TrainingRefused(problem, field="name")
    if LoRA.objects.filter(owner=user, name=name).exists():
        raise TrainingRefused(f"You already have a LoRA called {name!r}: choose another name.", field="name",
                              status=409)
    if Training.objects.filter(job__user=user, name=name, job__state__in=[JobState.QUEUED, JobState.RUNNING]).exists():
        raise TrainingRefused(f"A training of yours called {name!r} is already under way: choose another name.",
                              field="name", status=409)
    return name


def _store_images(folder: str, images: list[TrainingImageInput]) -> list[str]:
    names = []
    try:
        for index, image in enumerate(images):
            names.append(default_storage.save(f"{folder}/{index}.png", ContentFile(image.png)))
    except BaseException:
        files_delete_now(names)
        raise
    return names


@transaction.atomic
def training_submit(*, user, name: str, spec_fields: dict, images: list[TrainingImageInput], api_key=None) -> Job:
    """Queue a training: validate it, reserve its credits, create its Job (kind TRAIN), Training
    and TrainingImages in one transaction; wake a training worker on commit.

    Raises engine InvalidRequest (a setting, with its field), TrainingRefused (a taken name, a
    full fine-tune not allowed), billing.InsufficientCredits or TooManyActiveJobs; then nothing is
    written and nothing charged (the pictures stored for it are removed again). `api_key`: the
    accounts.ApiKey it came through (recorded on the hold; its monthly cap applies)."""
    if not permissions.can_start_training(user):
        raise TrainingRefused("Sign in to start a training.", status=403)
    if not isinstance(spec_fields, dict):
        raise InvalidRequest("settings", "must be a mapping of setting names to values")
    spec = _spec_from(spec_fields, list(images))
    if spec.full_finetune:
        if not permissions.can_full_finetune(user):
            raise TrainingRefused("You may not train a full fine-tune; train a LoRA instead.", field="full_finetune",
                                  status=403)
        if not Path(spec.base_model_path).is_dir():
            raise TrainingRefused("A full fine-tune starts from a model in diffusers folders; this studio's model is "
                                  "a single file. Train a LoRA instead.", field="full_finetune")
    _lock_user_for_submit(user)
    name = _check_name(user, name)
    active = Job.objects.filter(user=user).active().count()
    if active >= settings.STUDIO_MAX_ACTIVE_JOBS_PER_USER:
        raise TooManyActiveJobs(
            f"You already have {active} jobs waiting or running; wait for one to finish or cancel one."
        )
    info = own_model_info()  # what the trainer starts from (TrainingSpec.base_model_path)
    cost = training_cost(method=spec.method, steps=spec.steps, resolution=spec.resolution,
                         num_images=len(spec.images),
                         num_class_images=spec.num_class_images if spec.prior_preservation else 0,
                         train_text_encoder=spec.train_text_encoder)
    job_id = uuid.uuid4()
    files = _store_images(f"trainings/{user.pk}/{job_id}", list(images))
    try:
        job = Job.objects.create(
            id=job_id, user=user, kind=JobKind.TRAIN, prompt=spec.instance_prompt or spec.images[0].caption,
            negative_prompt="", width=spec.resolution, height=spec.resolution, steps=spec.steps,
            guidance_scale=info.default_guidance_scale, sampler=info.default_sampler, seed=spec.seed, num_images=1,
            model_name=info.name, model_hash=info.hash, cost=cost,
        )
        training = Training.objects.create(
            job=job, name=name, preset=str(spec_fields.get("preset") or "")[:16],
            validation_prompts=list(spec.validation_prompts), validation_seeds=list(spec.validation_seeds),
            **{key: getattr(spec, key) for key in TRAINING_ROW_FIELDS},
            lora_targets=lora_targets_of(spec), train_token_embeddings=token_embeddings_of(spec),
        )
        TrainingImage.objects.bulk_create(
            TrainingImage(training=training, index=index, file=file_name, caption=spec.images[index].caption,
                          source_image=images[index].source_image)
            for index, file_name in enumerate(files)
        )
        billing.credits_reserve(user=user, subject=job.billing_subject, amount=cost, api_key=api_key)
    except BaseException:
        files_delete_now(files)  # no row will name them
        raise
    events.job_state_changed(job)
    transaction.on_commit(wakeup.wake_training_workers_in_background)
    return job


def training_spec(job: Job) -> TrainingSpec:
    """The trainer's spec of a training job (worker side: reads its pictures from storage)."""
    training = job.training
    images = []
    for image in training.images.order_by("index"):
        with default_storage.open(image.file.name, "rb") as handle:
            images.append(SpecImage(png=handle.read(), caption=image.caption))
    return TrainingSpec(
        base_model_path=str(model_path()), images=tuple(images), method=training.method, steps=job.steps,
        rank=training.rank, learning_rate=training.learning_rate, resolution=job.width,
        train_text_encoder=training.train_text_encoder, seed=job.seed,
        instance_prompt=job.prompt,
        instance_token=training.instance_token, class_prompt=training.class_prompt,
        class_prompts=tuple(training.class_prompts or ()), prior_preservation=training.prior_preservation,
        prior_loss_weight=training.prior_loss_weight, num_class_images=training.num_class_images,
        lora_targets=training.lora_targets, train_token_embeddings=training.train_token_embeddings,
        full_finetune=training.full_finetune, checkpoint_every=training.checkpoint_every,
        sample_every=training.sample_every, validation_prompts=tuple(training.validation_prompts or ()),
        validation_seeds=tuple(training.validation_seeds or (0,)),
    )


def training_resume_point(job: Job) -> TrainingCheckpoint | None:
    """The checkpoint a (re)started attempt continues from, or None to start at step 0."""
    training = job.training
    if not training.checkpoint_file or not training.checkpoint_step:
        return None
    with default_storage.open(training.checkpoint_file.name, "rb") as handle:
        state = handle.read()
    lora = b""
    if training.checkpoint_lora_file:
        with default_storage.open(training.checkpoint_lora_file.name, "rb") as handle:
            lora = handle.read()
    return TrainingCheckpoint(step=training.checkpoint_step, state=state, lora=lora)


# --- While it runs (worker side, fenced by the lease) -----------------------------------------------

def _folder(job: Job) -> str:
    return f"trainings/{job.user_id}/{job.pk}"


def _locked_leased_training(lease: Lease) -> tuple[Job, Training]:
    job = _locked_leased_job(lease)
    training = Training.objects.select_for_update().get(pk=job.pk)
    return job, training


def training_checkpoint_saved(*, lease: Lease, checkpoint: TrainingCheckpoint) -> None:
    """Store a checkpoint (the resumable state and the LoRA as of its step) and record it; the
    previous checkpoint's files go after the commit. Renews the lease. Raises LeaseLost (and
    removes the new files) when this attempt no longer owns the job."""
    job = Job.objects.only("pk", "user_id").get(pk=lease.job_id)
    stem = f"{_folder(job)}/checkpoints/{checkpoint.step:06d}-{uuid.uuid4().hex[:8]}"
    written = [default_storage.save(f"{stem}.state.safetensors", ContentFile(checkpoint.state))]
    try:
        if checkpoint.lora:
            written.append(default_storage.save(f"{stem}.lora.safetensors", ContentFile(checkpoint.lora)))
        with transaction.atomic():
            job, training = _locked_leased_training(lease)
            old = [training.checkpoint_file.name, training.checkpoint_lora_file.name]
            Training.objects.filter(pk=training.pk).update(
                checkpoint_file=written[0], checkpoint_lora_file=written[1] if len(written) > 1 else "",
                checkpoint_step=checkpoint.step,
            )
            Job.objects.filter(pk=job.pk).update(lease_expires_at=lease_expiry(), progress_step=checkpoint.step)
            files_delete_on_commit(old)
    except BaseException:
        files_delete_now(written)
        raise


def thin_losses(points: list) -> list:
    """At most about MAX_LOSS_POINTS points: every other one of the older half is dropped while
    there are too many (the recent curve keeps its detail; the last point always stays)."""
    points = list(points)
    while len(points) > MAX_LOSS_POINTS:
        half = len(points) // 2
        points = points[:half:2] + points[half:]
    return points


@transaction.atomic
def training_record_losses(*, lease: Lease, losses: list[tuple[int, float]]) -> None:
    """Append [step, loss] points to the training's curve. Points at or after the first new step
    are replaced (an attempt that resumed from a checkpoint redoes the steps after it)."""
    if not losses:
        return
    _, training = _locked_leased_training(lease)
    first = int(losses[0][0])
    points = [point for point in training.losses or [] if point[0] < first]
    points += [[int(step), round(float(loss), 6)] for step, loss in losses]
    Training.objects.filter(pk=training.pk).update(losses=thin_losses(points))


def training_samples_saved(*, lease: Lease, step: int, pngs: list[bytes]) -> list[str]:
    """Store the sample images of `step` and record them; a page hears of them on commit."""
    job = Job.objects.only("pk", "user_id").get(pk=lease.job_id)
    folder = f"{_folder(job)}/samples"
    written = []
    try:
        for index, png in enumerate(pngs):
            written.append(default_storage.save(f"{folder}/{step:06d}-{index}.png", ContentFile(png)))
        with transaction.atomic():
            _, training = _locked_leased_training(lease)
            samples = [entry for entry in training.samples or [] if entry.get("step") != step]
            replaced = [name for entry in training.samples or [] if entry.get("step") == step
                        for name in entry.get("files", [])]
            samples.append({"step": step, "files": written})
            Training.objects.filter(pk=training.pk).update(samples=samples)
            files_delete_on_commit(replaced)
            events.training_samples(job_id=job.pk, step=step)
    except BaseException:
        files_delete_now(written)
        raise
    return written


def _lora_from(job: Job, training: Training, data: bytes, *, steps: int) -> LoRA:
    base_family = ""
    try:
        from generation.engine.lora_format import inspect_lora

        base_family = inspect_lora(data).base_family_guess or ""
    except Exception:  # the trainer wrote it; a family we cannot tell is left blank
        logger.warning("Could not read the LoRA of training %s", job.pk, exc_info=True)
    return lora_create_from_bytes(
        owner=job.user, name=training.name, data=data, source=LoRASource.TRAINED, base_model=job.model_name,
        training=training, trigger_words=training.instance_token, rank=training.rank, steps=steps,
        base_family=base_family,
    )


def _checkpoint_folder_files(job: Job) -> list[str]:
    """Every file in a training's checkpoint folder, the recorded ones and any a worker wrote and
    died before recording (killed between writing the files and committing them)."""
    folder = f"{_folder(job)}/checkpoints"
    try:
        _, names = default_storage.listdir(folder)
    except FileNotFoundError:
        return []
    return [f"{folder}/{name}" for name in names]


def _drop_checkpoint_files(training: Training) -> None:
    """A finished training needs no resumable state; the LoRA row has its own copy of the file."""
    files_delete_on_commit([training.checkpoint_file.name, training.checkpoint_lora_file.name,
                            *_checkpoint_folder_files(training.job)])
    Training.objects.filter(pk=training.pk).update(checkpoint_file="", checkpoint_lora_file="")


@transaction.atomic
def training_succeed(*, lease: Lease, result: TrainingResult, model_folder: str = "") -> Job:
    """The run finished: its LoRA (a full fine-tune: its private model, whose folder the worker
    stored under `model_folder`), the whole cost captured, SUCCEEDED."""
    job, training = _locked_leased_training(lease)
    if training.full_finetune:
        if not (model_folder and result.model_dir):
            raise ValueError("a finished full fine-tune has a model folder")
        sd_models.model_register_private(
            owner=job.user, title=training.name, local_dir=result.model_dir, storage_folder=model_folder,
            description=f"Fine-tuned from {job.model_name} ({result.steps_done} steps).")
    elif not result.lora:
        raise ValueError("a finished training has a LoRA")
    else:
        _lora_from(job, training, result.lora, steps=result.steps_done)
    billing.credits_capture(subject=job.billing_subject, amount=job.cost)
    _drop_checkpoint_files(training)
    Training.objects.filter(pk=training.pk).update(checkpoint_step=result.steps_done)
    finish(job, state=JobState.SUCCEEDED, progress_step=job.steps, engine_seconds=result.seconds)
    return job


def charge_for_steps(job: Job, steps_done: int) -> int:
    """What a stopped training is charged: its reserved cost pro rata for the steps of its last
    checkpoint, rounded down (in the user's favour)."""
    steps_done = max(0, min(steps_done, job.steps))
    return job.cost * steps_done // job.steps


def settle_cancelled_training(job: Job, *, error: str) -> None:
    """Cancel a training (its row locked by the caller): capture pro rata for the steps of its last
    checkpoint and release the rest, keep the LoRA of that checkpoint, mark it CANCELLED. With no
    checkpoint nothing is charged. Used by the worker, the sweeper and a cancel while queued."""
    training = Training.objects.select_for_update().get(pk=job.pk)
    steps_done = training.checkpoint_step if training.checkpoint_lora_file else 0
    if steps_done:
        with default_storage.open(training.checkpoint_lora_file.name, "rb") as handle:
            data = handle.read()
        _lora_from(job, training, data, steps=steps_done)
        billing.credits_capture(subject=job.billing_subject, amount=charge_for_steps(job, steps_done))
    else:
        billing.credits_release(subject=job.billing_subject, reason="Training cancelled")
    _drop_checkpoint_files(training)
    finish(job, state=JobState.CANCELLED, error=error, progress_step=steps_done)


@transaction.atomic
def training_mark_cancelled(*, lease: Lease) -> Job:
    """The trainer stopped because the user asked to cancel (it checkpointed where it stopped)."""
    job = _locked_leased_job(lease)
    settle_cancelled_training(job, error="Cancelled while running; the LoRA of the last checkpoint is kept.")
    return job


@transaction.atomic
def training_fail(*, lease: Lease, reason: str) -> Job:
    """The run failed: everything released, no LoRA."""
    job, training = _locked_leased_training(lease)
    billing.credits_release(subject=job.billing_subject, reason=f"Training failed: {reason}"[:200])
    _drop_checkpoint_files(training)
    finish(job, state=JobState.FAILED, error=reason)
    return job


def drop_checkpoint_of_failed(job: Job) -> None:
    """The sweeper gave up on a training: its checkpoint files go too."""
    training = Training.objects.filter(pk=job.pk).first()
    if training is not None:
        _drop_checkpoint_files(training)


__all__ = [
    "LeaseLost", "TrainingImageInput", "TrainingRefused", "charge_for_steps", "training_checkpoint_saved",
    "training_cost", "training_fail", "training_mark_cancelled", "training_record_losses",
    "training_resume_point", "training_samples_saved", "training_spec", "training_submit", "training_succeed",
]
