"""/loras: the LoRAs a key may use, one LoRA, its .safetensors file, import one, delete one.

A user's key sees the LoRAs its user may apply on Create (generation.forms.usable_loras: their own
and those shared with a team they create in); a team's key the LoRAs shared with its team. Any
other LoRA is a 404, the same answer as one that does not exist. Reading needs any scope
(`generate`, `read_images` or `train`); importing and deleting need `train` and a user's key: a
LoRA belongs to a user (the web's rules, generation.permissions, decide download and delete).
Importing goes through the service the web's import uses (services.lora_import), so the API
accepts the same files, with the same messages.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from django.http import HttpResponse
from ninja import Field, Query, Router, Schema, Status

from accounts.api import ApiProblem, api_key_of, problems, require_scope
from generation import permissions, services, serving
from generation.api.common import file_response, page_of, require_any_scope
from generation.api.submit import form_problem, idempotency_key_of, request_fingerprint, submit_once
from generation.forms import usable_loras
from generation.models import LoRA
from generation.services.loras import LoraRefused
from generation.training_forms import LoraImportForm
from generation.upload_handlers import LORA_FIELD

router = Router(tags=["loras"])
READ_SCOPES = ("generate", "read_images", "train")


class LoraOut(Schema):
    id: uuid.UUID
    name: str = Field(description="What `<lora:name:weight>` in a prompt calls it.")
    description: str
    trigger_words: str = Field(description="Words its training taught (put them in the prompt).")
    rank: int | None
    steps: int | None = Field(description="Training steps it has, when known.")
    base_family: str = Field(description="The model family its keys fit.")
    sha256: str = Field(description="Of the file as stored (A1111's 'Lora hashes' use its first 12 digits).")
    size_bytes: int
    source: Literal["trained", "imported"]
    team_id: uuid.UUID | None = Field(description="The team it is shared with, if any.")
    mine: bool = Field(description="The key's user owns it (may delete it).")
    may_download: bool
    created_at: datetime
    file_url: str = Field(description="GET it with the same key (when `may_download`).")


class LoraListOut(Schema):
    items: list[LoraOut]
    count: int


class LoraListQuery(Schema):
    limit: int = Field(50, ge=1, le=200)
    offset: int = Field(0, ge=0, le=100_000)


def loras_usable_by(key) -> list[LoRA]:
    """The LoRAs a key lists: a user's key its user's usable ones (theirs first, then their teams',
    by name); a team's key those shared with the team (never its maker's own)."""
    if key.owner_team_id is not None:
        return list(LoRA.objects.filter(team_id=key.owner_team_id).order_by("name", "created_at"))
    return usable_loras(key.owner_user)


def _readable(request) -> list[LoRA]:
    return loras_usable_by(require_any_scope(request, READ_SCOPES, "LoRAs"))


def _may_download(key, lora: LoRA) -> bool:
    if key.owner_team_id is not None:  # a team key: what the owner allowed the team
        return lora.team_id == key.owner_team_id and lora.team_may_download
    return permissions.can_download_lora(key.owner_user, lora)


def _own_lora(request, lora_id) -> LoRA:
    lora = next((lora for lora in _readable(request) if lora.pk == lora_id), None)
    if lora is None:
        raise ApiProblem("not-found", "No LoRA with this id is yours or shared with your team.")
    return lora


def _out(key, lora: LoRA) -> LoraOut:
    return LoraOut(
        id=lora.pk, name=lora.name, description=lora.description, trigger_words=lora.trigger_words, rank=lora.rank,
        steps=lora.steps, base_family=lora.base_family, sha256=lora.sha256, size_bytes=lora.size_bytes,
        source=lora.source, team_id=lora.team_id,
        mine=key.owner_user_id is not None and lora.owner_id == key.owner_user_id,
        may_download=_may_download(key, lora), created_at=lora.created_at,
        file_url=f"/api/v1/loras/{lora.pk}/file",
    )


@router.get("/loras", response={200: LoraListOut, **problems(403, 422)},
            summary="The LoRAs I may use: mine first, then those shared with my teams")
def lora_list(request, query: Query[LoraListQuery]):
    page, count = page_of(_readable(request), query)
    return LoraListOut(items=[_out(api_key_of(request), lora) for lora in page], count=count)


@router.get("/loras/{lora_id}", response={200: LoraOut, **problems(403, 404, 422)}, summary="One LoRA")
def lora_detail(request, lora_id: uuid.UUID):
    return _out(api_key_of(request), _own_lora(request, lora_id))


@router.get("/loras/{lora_id}/file", response={200: None, **problems(403, 404, 422)},
            openapi_extra=file_response("The LoRA's .safetensors file.", "application/octet-stream"),
            summary="Download a LoRA's .safetensors (its owner, or a team it is shared with if downloads are allowed)")
def lora_file(request, lora_id: uuid.UUID):
    lora = _own_lora(request, lora_id)
    if not _may_download(api_key_of(request), lora):
        raise ApiProblem("forbidden", "The owner of this LoRA has not allowed downloads.")
    return serving.serve_file(lora.file.name, "application/octet-stream", download_name=f"{lora.name}.safetensors")


def _user_key(request, doing: str):
    key = require_scope(request, "train")
    if key.owner_team_id is not None:
        raise ApiProblem("forbidden", f"A team key cannot {doing}: a LoRA belongs to a user. Use a personal key.")
    return key


def _refusal_problem(refused: LoraRefused, *, field_names: dict[str, str] | None = None) -> ApiProblem:
    if refused.status == 403:
        return ApiProblem("forbidden", refused.message)
    if refused.status == 404:
        return ApiProblem("not-found", refused.message)
    if refused.status == 409:
        return ApiProblem("conflict", refused.message)
    field = (field_names or {}).get(refused.field, refused.field)
    loc = ["body", field] if field else ["body"]
    return ApiProblem("validation-error", f"{field or 'request'}: {refused.message}",
                      errors=[{"loc": loc, "msg": refused.message, "type": "invalid"}])


@router.delete("/loras/{lora_id}", response={204: None, **problems(403, 404, 409, 422)},
               summary="Delete my LoRA (refused while a queued or running job uses it)")
def lora_remove(request, lora_id: uuid.UUID):
    key = _user_key(request, "delete a LoRA")
    lora = _own_lora(request, lora_id)
    try:
        services.lora_delete(user=key.owner_user, lora=lora)
    except LoraRefused as refused:
        raise _refusal_problem(refused) from None
    return Status(204, None)


def _import_body() -> dict:
    schema = {"type": "object", "required": ["name", LORA_FIELD], "properties": {
        "name": {"type": "string", "maxLength": 64,
                 "description": "Letters, digits, _ . - (what <lora:name:w> calls it)."},
        "description": {"type": "string", "maxLength": 500},
        LORA_FIELD: {"type": "string", "format": "binary",
                     "description": "A .safetensors file (kohya/A1111, diffusers or PEFT keys); pickles are refused."},
    }}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


@router.post("/loras", response={201: LoraOut, **problems(400, 403, 409, 415, 422)}, openapi_extra=_import_body(),
             summary="Import a LoRA (.safetensors, multipart/form-data), checked against the model that serves")
def lora_create(request, response: HttpResponse):
    key = _user_key(request, "import a LoRA")
    if request.content_type != "multipart/form-data":
        raise ApiProblem("unsupported-media-type", f"Send multipart/form-data with the file as {LORA_FIELD!r}.")
    form = LoraImportForm(request.POST, request.FILES)
    if not form.is_valid():
        raise form_problem(form)
    upload = form.cleaned_data[LORA_FIELD]
    upload.seek(0)
    data = upload.read()
    fields = {name: form.cleaned_data[name] for name in ("name", "description")}

    def import_lora() -> LoRA:
        try:
            return services.lora_import(user=key.owner_user, data=data, filename=upload.name, **fields)
        except LoraRefused as refused:
            raise _refusal_problem(refused, field_names={"file": LORA_FIELD}) from None

    made = submit_once(key=key, idempotency_key=idempotency_key_of(request),
                       fingerprint=request_fingerprint(request, fields, {LORA_FIELD: data}), submit=import_lora)
    response["Location"] = f"/api/v1/loras/{made.lora.pk}"
    if made.replayed:
        response["Idempotent-Replayed"] = "true"
    return Status(201, _out(key, made.lora))
