"""The model registry (docs/models.md, "Several models"): register, change, mark broken, repair.

A model is registered by its path on the worker hosts. Registering reads the file's header (never
its weights, never torch: `engine.model_info`) on the host that registers it, and keeps what it
read in SDModel.info, so the web can validate sizes and quote prices without the file.

The studio's own model (STUDIO_MODEL_PATH, else the demo model) is registered by itself the first
time it is needed (`builtin_model`): a fresh studio has one model and nothing to set up.
"""

from __future__ import annotations

import dataclasses
import logging
import re

from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from billing import services as billing
from generation.engine.contracts import ModelError
from generation.engine.model_info import read_model_info
from generation.models import Job, JobState, SDModel
from generation.services import wakeup
from generation.services.queue import finish

logger = logging.getLogger(__name__)
MODEL_NAME = re.compile(r"[-a-zA-Z0-9_]{1,100}")  # a slug: the API's and the queue's name of it


class ModelNotUsable(Exception):
    """A model cannot be registered (unreadable path, not a checkpoint) or is not offered now."""


def read_info(path: str) -> dict:
    """What the engine reads from a model's files, as SDModel.info; ModelNotUsable if it cannot."""
    try:
        info = read_model_info(path)
    except (ModelError, OSError, ValueError) as error:
        raise ModelNotUsable(f"{path}: {error}") from error
    return dataclasses.asdict(info)


@transaction.atomic
def model_register(*, name: str, title: str, path: str, description: str = "", is_default: bool = False,
                   price_multiplier=None, **defaults) -> SDModel:
    """Register a checkpoint. `defaults`: default_steps, default_guidance_scale, default_sampler,
    default_width, default_height (None: the model's own). Raises ModelNotUsable."""
    if not MODEL_NAME.fullmatch(name or ""):
        raise ModelNotUsable(f"{name!r} is not a model name: letters, digits, - and _ (up to 100).")
    if SDModel.objects.filter(name=name).exists():
        raise ModelNotUsable(f"A model called {name} is registered already.")
    model = SDModel(name=name, title=title or name, path=path, description=description, info=read_info(path),
                    **defaults)
    model.save()
    if is_default:
        model_make_default(model=model)
    if price_multiplier is not None:
        billing.model_price_set(model_name=name, multiplier=price_multiplier)
    transaction.on_commit(wakeup.tell_workers_models_changed)
    return model


@transaction.atomic
def model_update(*, model: SDModel, reread: bool = False, price_multiplier=None, **fields) -> SDModel:
    """Change what staff may change (title, description, path, defaults, enabled). A new path, or
    `reread`, reads the file again (a replaced file gets its new hash)."""
    path_changed = "path" in fields and fields["path"] != model.path
    for field, value in fields.items():
        setattr(model, field, value)
    if path_changed or reread:
        model.info = read_info(model.path)
    model.save()
    if price_multiplier is not None:
        billing.model_price_set(model_name=model.name, multiplier=price_multiplier)
    transaction.on_commit(wakeup.tell_workers_models_changed)
    return model


@transaction.atomic
def model_make_default(*, model: SDModel) -> SDModel:
    SDModel.objects.filter(is_default=True).exclude(pk=model.pk).update(is_default=False)
    SDModel.objects.filter(pk=model.pk).update(is_default=True, enabled=True)
    model.refresh_from_db()
    return model


@transaction.atomic
def model_mark_broken(*, model_id: int, reason: str) -> int:
    """A worker could not load the model: mark it for staff and fail its queued jobs with the
    reason and their credits released (their users should not wait for a repair). Returns how
    many jobs failed. Running jobs of it are the worker's to fail."""
    SDModel.objects.filter(pk=model_id).update(broken_reason=reason[:2000], broken_at=timezone.now())
    failed = 0
    for job in Job.objects.select_for_update().filter(model_id=model_id, state=JobState.QUEUED):
        billing.credits_release(subject=job.billing_subject, reason="The model could not be loaded")
        finish(job, state=JobState.FAILED, error=reason[:1000])
        failed += 1
    logger.error("Model %s is broken (%s); %d queued job(s) failed", model_id, reason, failed)
    return failed


@transaction.atomic
def model_repair(*, model: SDModel) -> SDModel:
    """Staff fixed the file: read it again and offer it again (ModelNotUsable if still unreadable)."""
    model.info = read_info(model.path)
    model.broken_reason, model.broken_at = "", None
    model.save()
    transaction.on_commit(wakeup.tell_workers_models_changed)
    return model


def model_for_submit(model: SDModel | None, user=None) -> SDModel:
    """The model a new job of `user` runs on: `model` as it is now, or the default one (the studio's
    own model, registered the first time). ModelNotUsable when it is not offered to them."""
    from generation.selectors import default_model

    model = SDModel.objects.filter(pk=model.pk).first() if model is not None else default_model() or builtin_model()
    if model is None or (model.owner_id is not None and (user is None or model.owner_id != user.pk)):
        raise ModelNotUsable("That model is no longer registered.")
    if model.is_broken:
        raise ModelNotUsable(f"The model {model.title} is unavailable: a worker could not load it "
                             f"({model.broken_reason}).")
    if not model.enabled:
        raise ModelNotUsable(f"The model {model.title} is no longer offered; choose another.")
    return model


@transaction.atomic
def model_register_private(*, owner, title: str, local_dir: str, storage_folder: str, description: str = "") -> SDModel:
    """A full fine-tune's model variant, private to `owner`: its diffusers folder is in the file
    storage under `storage_folder` (a copy of `local_dir`, read here for its info and hash)."""
    base = slugify(f"{owner.pk}-{title}")[:90] or f"{owner.pk}-model"
    model = SDModel.objects.create(name=_free_name(base), title=title[:200], description=description,
                                   owner=owner, storage_folder=storage_folder, info=read_info(local_dir))
    transaction.on_commit(wakeup.tell_workers_models_changed)
    return model


def models_to_list(user=None) -> list[SDModel]:
    """What the API lists as `user`'s models: those offered to them, or, before any is registered,
    the studio's own model (registered now)."""
    from generation.selectors import models_offered

    return list(models_offered(user)) or [builtin_model()]


def builtin_model() -> SDModel:
    """The row of the studio's own model (STUDIO_MODEL_PATH, else the demo model), registered the
    first time it is needed; the default model when no other is."""
    from generation.selectors import model_path  # the one place that knows where it is

    path = str(model_path())
    model = SDModel.objects.filter(path=path).first()
    if model is not None:
        return model
    with transaction.atomic():
        info = read_info(path)
        name = _free_name(slugify(info["name"]) or "model")
        model, _ = SDModel.objects.get_or_create(
            path=path, defaults={"name": name, "title": info["name"], "info": info})
        if not SDModel.objects.filter(is_default=True).exists():
            model = model_make_default(model=model)
        transaction.on_commit(wakeup.tell_workers_models_changed)  # running workers consume its queue
    return model


def _free_name(base: str) -> str:
    name, number = base[:100], 2
    while SDModel.objects.filter(name=name).exists():
        name, number = f"{base[:95]}-{number}", number + 1
    return name
