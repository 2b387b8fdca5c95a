"""Submitting, cancelling and deleting jobs (web side), and what a job costs."""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from accounts import permissions as team_permissions
from accounts.models import Membership
from billing import selectors as billing_selectors
from billing import services as billing
from generation import events
from generation import permissions
from generation.engine.contracts import MAX_LORAS, MAX_LORA_WEIGHT, MIN_LORA_WEIGHT
from generation.models import Image, Job, JobKind, JobNotDeletable, JobState, LoRA, SDModel, Training
from generation.selectors import default_model, model_info
from generation.services import sd_models, wakeup
from generation.services.files import files_delete_now, files_delete_on_commit


class TooManyActiveJobs(Exception):
    pass


@dataclass(frozen=True)
class CanvasInput:
    """What the canvas adds to a request: its mode, the source (and mask) as checked PNG bytes
    (generation.services.uploads made them), and the inpaint options. An outpaint arrives as its
    padded canvas and the mask of the new area, with the amounts kept for the record."""

    mode: str  # a JobMode other than txt2img
    source_png: bytes
    mask_png: bytes | None = None
    strength: float = 0.75
    mask_blur: int = 4
    masked_content: str = "original"
    only_masked: bool = False
    only_masked_padding: int = 32
    outpaint: tuple[int, int, int, int] = (0, 0, 0, 0)  # left, top, right, bottom
    source_image: Image | None = None  # the studio image it started from, if any

    def job_fields(self) -> dict:
        left, top, right, bottom = self.outpaint
        return {
            "mode": self.mode, "strength": self.strength, "mask_blur": self.mask_blur,
            "masked_content": self.masked_content, "only_masked": self.only_masked,
            "only_masked_padding": self.only_masked_padding, "outpaint_left": left, "outpaint_top": top,
            "outpaint_right": right, "outpaint_bottom": bottom, "source_image": self.source_image,
        }


def _store_canvas_files(user, canvas: CanvasInput) -> dict[str, str]:
    """Save the source and mask through the storage API (private: served only through views
    that check the job's visibility). Returns the Job's file fields."""
    folder = f"canvas/{user.pk}/{uuid.uuid4().hex}"
    names = {"source_file": default_storage.save(f"{folder}/source.png", ContentFile(canvas.source_png))}
    if canvas.mask_png is not None:
        names["mask_file"] = default_storage.save(f"{folder}/mask.png", ContentFile(canvas.mask_png))
    return names


class TeamNotAllowed(Exception):
    """The user may not generate into (or bill) this team: not a member, or only a viewer."""


@dataclass(frozen=True)
class LoraChoice:
    """A LoRA to apply to a Create job, with its weight (the engine's MIN_LORA_WEIGHT..MAX_LORA_WEIGHT)."""

    lora: LoRA
    weight: float = 1.0


class LoraNotAllowed(Exception):
    """A LoRA of the job cannot be used: not (or no longer) the user's or shared with a team in
    which they create, gone, too many, or a weight out of range. The message names it."""


def _lock_loras_allowing_submit(user, loras) -> list[dict]:
    """Lock the chosen LoRA rows (lora_delete locks them too, so a delete and this submit
    serialise), check under the lock that the user may still use each, and return Job.loras's
    snapshot [{id, name, sha256, weight}]."""
    loras = list(loras)
    if len(loras) > MAX_LORAS:
        raise LoraNotAllowed(f"At most {MAX_LORAS} LoRAs at once, not {len(loras)}.")
    ids = [choice.lora.pk for choice in loras]
    if len(set(ids)) != len(ids):
        raise LoraNotAllowed("The same LoRA is chosen twice.")
    locked = {row.pk: row for row in LoRA.objects.select_for_update().filter(pk__in=ids)}
    snapshot = []
    for choice in loras:
        row = locked.get(choice.lora.pk)
        if row is None:
            raise LoraNotAllowed(f"The LoRA {choice.lora.name} no longer exists.")
        if not permissions.can_use_lora(user, row):
            raise LoraNotAllowed(f"You cannot use the LoRA {row.name} (it is not yours, or no longer shared "
                                 f"with a team you create in).")
        weight = float(choice.weight)
        if not MIN_LORA_WEIGHT <= weight <= MAX_LORA_WEIGHT:
            raise LoraNotAllowed(f"The weight of {row.name} must be from {MIN_LORA_WEIGHT:g} to {MAX_LORA_WEIGHT:g}.")
        snapshot.append({"id": str(row.pk), "name": row.name, "sha256": row.sha256, "weight": weight})
    return snapshot


def job_cost(*, width: int, height: int, steps: int, num_images: int, model: SDModel | None = None) -> int:
    """Credits for a Create request on a model (the default one without; billing prices plain
    numbers and the model's name, whose multiplier it keeps)."""
    model = model or default_model()
    return billing.job_price(width=width, height=height, steps=steps, num_images=num_images,
                             model_name=model.name if model else model_info().name)


def _lock_user_for_submit(user) -> None:
    """Serialise one user's submits, so "count active jobs" and "insert one" cannot interleave.

    FOR NO KEY UPDATE on the user row (PostgreSQL): it queues a second submit of the same user
    until this transaction ends, yet does not block inserts that merely reference the user (their
    foreign keys take KEY SHARE). SQLite's IMMEDIATE transactions serialise all writers anyway.
    """
    list(get_user_model()._base_manager.select_for_update(no_key=True).filter(pk=user.pk).values_list("pk"))


def _lock_membership_allowing_submit(user, team) -> None:
    """Lock the user's membership row and check, under the lock, that its role may create in the
    team. Removing or demoting the member locks the same row (accounts.services.teams), so it
    waits for this submit, and its "cancel their team-billed jobs" step then sees this job: a
    removed member never leaves a job queued on the team's wallet."""
    role = (Membership.objects.select_for_update(no_key=True).filter(team_id=team.pk, user_id=user.pk)
            .values_list("role", flat=True).first())
    if not (user.is_active and team_permissions.can_contribute(role)):
        raise TeamNotAllowed("You cannot create images in that team.")


@transaction.atomic
def job_submit(*, user, prompt: str, negative_prompt: str, width: int, height: int, steps: int,
               guidance_scale: float, sampler: str, seed: int, num_images: int,
               team=None, bill_team: bool = False, canvas: CanvasInput | None = None,
               loras=(), api_key=None, model: SDModel | None = None) -> Job:
    """Create a QUEUED job and reserve its credits in one transaction; wake a worker on commit.

    With `team` its images go to that team's gallery; with `bill_team` too, the team's wallet
    pays (the member's monthly cap applies). With `canvas`, it works on a source image (the
    canvas's files are stored first and removed again if the job is not created). `loras`:
    LoraChoice(lora, weight) items, checked under the transaction with can_use_lora and snapshotted
    in Job.loras (the prompt should carry their <lora:name:w> tags: forms.CreateForm writes them);
    they do not change the price. `api_key`: the accounts.ApiKey it came through (the hold records
    it and the key's monthly cap applies: billing.ApiKeyCapReached). `model`: a registered SDModel
    (the default one without); it must be offered (enabled, not broken), else ModelNotUsable.
    Raises billing.InsufficientCredits (or its MemberCapReached), TooManyActiveJobs,
    TeamNotAllowed, LoraNotAllowed or ModelNotUsable, in which case nothing is written.
    """
    if bill_team and team is None:
        raise ValueError("bill_team needs a team")
    _lock_user_for_submit(user)
    if team is not None:
        _lock_membership_allowing_submit(user, team)
    active = Job.objects.filter(user=user).active().count()
    if active >= settings.STUDIO_MAX_ACTIVE_JOBS_PER_USER:
        raise TooManyActiveJobs(
            f"You already have {active} jobs waiting or running; wait for one to finish or cancel one."
        )
    lora_snapshot = _lock_loras_allowing_submit(user, loras)
    model = sd_models.model_for_submit(model, user)
    cost = job_cost(width=width, height=height, steps=steps, num_images=num_images, model=model)
    files = _store_canvas_files(user, canvas) if canvas is not None else {}
    try:
        job = Job.objects.create(
            user=user, prompt=prompt, negative_prompt=negative_prompt, width=width, height=height, steps=steps,
            guidance_scale=guidance_scale, sampler=sampler, seed=seed, num_images=num_images,
            model=model, model_name=model.name, model_hash=model.hash, cost=cost, team=team, billed_to_team=bill_team,
            loras=lora_snapshot, **(canvas.job_fields() if canvas is not None else {}), **files,
        )
        billing.credits_reserve(user=user, subject=job.billing_subject, amount=cost,
                                team=team if bill_team else None, api_key=api_key)
    except BaseException:
        files_delete_now(list(files.values()))  # no job will name them
        raise
    events.job_state_changed(job)
    transaction.on_commit(functools.partial(wakeup.wake_workers_in_background, queue=model.queue))
    return job


@transaction.atomic
def job_cancel(*, job: Job) -> Job:
    """Cancel a queued job at once; ask the worker of a running one to stop at its next step."""
    if job.kind == JobKind.TRAIN and (locked := Job.objects.select_for_update(of=("self",)).filter(
            pk=job.pk, state=JobState.QUEUED, training__checkpoint_step__gt=0).first()):
        # A training queued again after its worker died: it keeps (and pays for) its checkpoint.
        from generation.services.training import settle_cancelled_training

        settle_cancelled_training(locked, error="Cancelled while waiting to resume; the LoRA of its last "
                                                "checkpoint is kept.")
        job.refresh_from_db()
    elif Job.objects.filter(pk=job.pk, state=JobState.QUEUED).update(
        state=JobState.CANCELLED, finished_at=timezone.now(), error="Cancelled before it started."
    ):
        job.refresh_from_db()
        billing.credits_release(subject=job.billing_subject, reason="Job cancelled")
        events.job_state_changed(job)
    elif Job.objects.filter(pk=job.pk, state=JobState.RUNNING).update(cancel_requested=True):
        job.refresh_from_db()
        events.job_state_changed(job)
    else:
        job.refresh_from_db()
    return job


@transaction.atomic
def job_delete(*, job: Job) -> None:
    """Delete a finished job, its images and their files. A job whose credits are still held
    (queued, running, or a hold not yet settled) raises JobNotDeletable: deleting it would strand
    the credits."""
    locked = Job.objects.select_for_update().filter(pk=job.pk).first()
    if locked is None:
        return
    if locked.is_active:
        raise JobNotDeletable(f"This job is {locked.get_state_display().lower()}: cancel it first.")
    if billing_selectors.subject_has_open_hold(subject=locked.billing_subject):
        raise JobNotDeletable("This job still has credits on hold; run `manage.py billing_check`.")
    files = [name for image in locked.images.all() for name in (image.file.name, image.thumbnail.name)]
    files += [name for name in (locked.source_file.name, locked.mask_file.name) if name]
    if locked.kind == JobKind.TRAIN and (training := Training.objects.filter(pk=locked.pk).first()):
        files += [image.file.name for image in training.images.all()]
        files += [training.checkpoint_file.name, training.checkpoint_lora_file.name]
        files += [name for entry in training.samples or [] for name in entry.get("files", [])]
    locked.delete()
    files_delete_on_commit(files)
