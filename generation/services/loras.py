"""The LoRA library: store a trained or imported adapter, rename, share with a team, delete.

Files live in storage as ``loras/<owner id>/<uuid>.safetensors`` (private: they leave the server
only through the download view, after generation.permissions.can_download_lora). Each row keeps
the sha256 and size of exactly the bytes stored, so the worker's cache and the PNG's
"Lora hashes" name the same file.

Decisions (docs/fine-tuning.md, "Pages"):
- Names are unique per owner. A trained LoRA whose name is taken gets a numbered suffix
  (``zwx-dog-2``): the training already ran and was paid for, so it is never thrown away over a
  name. An import with a taken name is refused with a message; nothing is stored.
- A LoRA named by an active (queued or running) job cannot be deleted: the job's snapshot
  (Job.loras) names the LoRA by id and the worker reads its file when the job runs. The refusal
  says which jobs to wait for or cancel. Once deleted, the file goes after the commit.
- Imports are read by generation.engine.lora_format.inspect_lora (the safetensors JSON header
  only, never unpickled, no torch) against the model that serves now; .ckpt/.pt/.bin and
  LoRAs for another model family are refused with its message.
"""

from __future__ import annotations

import hashlib
import re
import uuid

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction

from generation import permissions
from generation.models import LORA_NAME_PATTERN, Job, LoRA, LoRASource, Training
from generation.services.files import files_delete_now, files_delete_on_commit

NAME_RULE = "1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit"
_NAME = re.compile(LORA_NAME_PATTERN)
MAX_DESCRIPTION_CHARS = 500


class LoraRefused(Exception):
    """A LoRA change that is not made; ``message`` can be shown to the user as it is, ``field``
    names the form field it is about ("" for the whole form), ``status`` is the HTTP answer."""

    def __init__(self, message: str, *, field: str = "", status: int = 400):
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status


def lora_max_bytes() -> int:
    return settings.STUDIO_LORA_MAX_BYTES


def lora_name_problem(name: str) -> str | None:
    """Why `name` cannot name a LoRA, or None. (`<lora:name:0.8>` must be able to call it.)"""
    if not isinstance(name, str) or not _NAME.match(name):
        return f"A LoRA name is {NAME_RULE}."
    return None


def _check_name(name: str) -> str:
    name = (name or "").strip()
    problem = lora_name_problem(name)
    if problem:
        raise LoraRefused(problem, field="name")
    return name


def _name_taken_message(name: str) -> str:
    return f"You already have a LoRA called {name!r}: choose another name."


def _free_name(owner, name: str) -> str:
    """`name`, or the first of name-2, name-3, ... that the owner does not use (fits 64 chars)."""
    taken = set(LoRA.objects.filter(owner=owner, name__startswith=name[:56]).values_list("name", flat=True))
    if name not in taken:
        return name
    number = 2
    while True:
        suffix = f"-{number}"
        candidate = name[: 64 - len(suffix)] + suffix
        if candidate not in taken:
            return candidate
        number += 1


def _store(owner, data: bytes) -> str:
    return default_storage.save(f"loras/{owner.pk}/{uuid.uuid4()}.safetensors", ContentFile(data))


def lora_create_from_bytes(*, owner, name: str, data: bytes, source: str, base_model: str,
                           training: Training | None = None, trigger_words: str = "", rank: int | None = None,
                           steps: int | None = None, base_family: str = "", description: str = "") -> LoRA:
    """Store `data` as a new LoRA of `owner` and return its row.

    For a trained LoRA (`source` "trained", called by the worker-side training services inside
    their lease-fenced transaction) a taken name gets a numbered suffix and `training.lora` is
    set; for any other source a taken name raises LoraRefused. The file is written before the row;
    if the row is not created the file is removed again. (If the caller's transaction later rolls
    back, the file stays as an orphan: storage has no rollback.)"""
    if source not in LoRASource.values:
        raise ValueError(f"unknown LoRA source {source!r}")
    name = _check_name(name)
    if not data:
        raise LoraRefused("The LoRA file is empty.", field="file")
    with transaction.atomic():
        if source == LoRASource.TRAINED:
            name = _free_name(owner, name)
        elif LoRA.objects.filter(owner=owner, name=name).exists():
            raise LoraRefused(_name_taken_message(name), field="name", status=409)
        file_name = _store(owner, data)
        try:
            with transaction.atomic():  # a savepoint: a unique-name race is an answer, not a broken transaction
                lora = LoRA.objects.create(
                    owner=owner, name=name, source=source, file=file_name, sha256=hashlib.sha256(data).hexdigest(),
                    size_bytes=len(data), trigger_words=trigger_words[:200], rank=rank, steps=steps,
                    base_model_name=base_model[:200], base_family=base_family[:32],
                    description=description[:MAX_DESCRIPTION_CHARS],
                )
        except IntegrityError:
            files_delete_now([file_name])
            raise LoraRefused(_name_taken_message(name), field="name", status=409) from None
        except BaseException:
            files_delete_now([file_name])
            raise
        if training is not None:
            Training.objects.filter(pk=training.pk).update(lora=lora)
            training.lora = lora
    return lora


def lora_import(*, user, name: str, data: bytes, filename: str, description: str = "") -> LoRA:
    """A LoRA trained elsewhere (kohya/A1111, diffusers or PEFT keys in a .safetensors file),
    checked against the model that serves now. Raises LoraRefused with the reason."""
    from generation.engine.lora_format import LoraFileError, inspect_lora
    from generation.selectors import model_path, own_model_info

    if not permissions.can_start_training(user):
        raise LoraRefused("Sign in to import a LoRA.", status=403)
    name = _check_name(name)
    if len(description) > MAX_DESCRIPTION_CHARS:
        raise LoraRefused(f"The description is over {MAX_DESCRIPTION_CHARS} characters.", field="description")
    if len(data) > lora_max_bytes():
        raise LoraRefused(f"The file is larger than {_size_text(lora_max_bytes())}.", field="file", status=413)
    if LoRA.objects.filter(owner=user, name=name).exists():
        raise LoraRefused(_name_taken_message(name), field="name", status=409)
    try:
        summary = inspect_lora(data, filename=filename, model_path=str(model_path()))
    except LoraFileError as error:
        raise LoraRefused(error.message, field="file") from None
    info = own_model_info()  # the model it was checked against just above
    trigger = _trigger_words(summary.metadata)
    return lora_create_from_bytes(
        owner=user, name=name, data=data, source=LoRASource.IMPORTED, base_model=info.name,
        base_family=summary.base_family_guess or info.family, rank=summary.rank, trigger_words=trigger,
        steps=_int_or_none((summary.metadata or {}).get("ss_max_train_steps")), description=description,
    )


def _size_text(count: int) -> str:
    return f"{count / (1024 * 1024):g} MB" if count >= 1024 * 1024 else f"{count / 1024:g} KB"


def _int_or_none(value) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number >= 0 else None


def _trigger_words(metadata: dict | None) -> str:
    """The words a kohya LoRA was trained on, from its own metadata, if it says (ss_tag_frequency
    is JSON of {folder: {tag: count}}; the most frequent few are its trigger words)."""
    import json

    raw = (metadata or {}).get("ss_tag_frequency")
    if not raw:
        return ""
    try:
        folders = json.loads(raw)
        counts: dict[str, int] = {}
        for tags in folders.values():
            for tag, count in tags.items():
                counts[tag.strip()] = counts.get(tag.strip(), 0) + int(count)
    except (ValueError, TypeError, AttributeError):
        return ""
    top = sorted((tag for tag in counts if tag), key=lambda tag: -counts[tag])[:3]
    return ", ".join(top)[:200]


def _locked(lora: LoRA) -> LoRA:
    locked = LoRA.objects.select_for_update().filter(pk=lora.pk).first()
    if locked is None:
        raise LoraRefused("This LoRA no longer exists.", status=404)
    return locked


@transaction.atomic
def lora_rename(*, user, lora: LoRA, name: str, description: str | None = None) -> LoRA:
    locked = _locked(lora)
    if not permissions.can_change_lora(user, locked):
        raise LoraRefused("Only its owner can rename a LoRA.", status=403)
    name = _check_name(name)
    if name != locked.name and LoRA.objects.filter(owner_id=locked.owner_id, name=name).exists():
        raise LoraRefused(_name_taken_message(name), field="name", status=409)
    locked.name = name
    fields = ["name"]
    if description is not None:
        if len(description) > MAX_DESCRIPTION_CHARS:
            raise LoraRefused(f"The description is over {MAX_DESCRIPTION_CHARS} characters.", field="description")
        locked.description = description
        fields.append("description")
    locked.save(update_fields=fields)
    return locked


@transaction.atomic
def lora_share_with_team(*, user, lora: LoRA, team_id, allow_download: bool = False) -> LoRA:
    """Its owner shares it with one team of theirs (member or above): the team's members use it
    on Create, and download it only with `allow_download`. Sharing with another team moves it."""
    locked = _locked(lora)
    if not permissions.can_share_lora_with_team(user, locked, team_id):
        raise LoraRefused("You can only share your own LoRAs with a team you create in.", field="team", status=403)
    locked.team_id = team_id
    locked.team_may_download = bool(allow_download)
    locked.save(update_fields=["team", "team_may_download"])
    return locked


@transaction.atomic
def lora_unshare(*, user, lora: LoRA) -> LoRA:
    """Stop sharing it with its team: its owner, or the team's admins."""
    locked = _locked(lora)
    if locked.team_id is None:
        return locked
    if not permissions.can_remove_lora_from_team(user, locked):
        raise LoraRefused("Only its owner or a team admin can stop sharing this LoRA.", status=403)
    locked.team_id = None
    locked.team_may_download = False
    locked.save(update_fields=["team", "team_may_download"])
    return locked


def jobs_using_lora(lora: LoRA):
    """Active (queued or running) jobs whose snapshot names this LoRA. (A JSON `contains` lookup
    is not on SQLite: the text search narrows, the snapshot decides.)"""
    candidates = Job.objects.active().filter(loras__icontains=str(lora.pk))
    return [job for job in candidates if any(str(item.get("id")) == str(lora.pk) for item in job.loras or [])]


@transaction.atomic
def lora_delete(*, user, lora: LoRA) -> None:
    """Delete the row now and its file after the commit. Refused while an active job names it
    (the row is locked, so a submit that locks it too cannot slip in between)."""
    locked = _locked(lora)
    if not permissions.can_change_lora(user, locked):
        raise LoraRefused("Only its owner can delete a LoRA.", status=403)
    using = jobs_using_lora(locked)
    if using:
        count = len(using)
        raise LoraRefused(
            f"{count} queued or running job{'s use' if count != 1 else ' uses'} this LoRA: "
            "wait for it to finish or cancel it, then delete the LoRA.", status=409,
        )
    file_name = locked.file.name
    locked.delete()
    files_delete_on_commit([file_name])
