"""POST /generations: the request, in JSON or multipart, turned into the web's own form.

A generation is checked by the same form the web posts (generation.forms.CreateForm, or
generation.canvas_forms.CanvasForm when it starts from a picture), so the API accepts exactly
what Create and the canvas accept, with the same messages. This module only translates: the
API's fields into the form's data and files, and the form's errors into a 422 problem.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from typing import Literal

from django.core.files.uploadedfile import SimpleUploadedFile, UploadedFile
from ninja import Field, Schema
from pydantic import ValidationError as PydanticValidationError

from accounts.api import ApiProblem
from generation.canvas_forms import CanvasForm
from generation.engine.contracts import MASKED_CONTENT, SAMPLERS
from generation.forms import ASPECT_RATIOS, CreateForm
from generation.models import JobMode
from generation.selectors import default_model, model_info, models_offered, teams_user_can_save_into

Mode = Literal["txt2img", "img2img", "inpaint", "outpaint"]
Aspect = Literal[tuple(ASPECT_RATIOS)]  # type: ignore[valid-type]
Sampler = Literal[tuple(SAMPLERS)]  # type: ignore[valid-type]
MaskedContent = Literal[tuple(MASKED_CONTENT)]  # type: ignore[valid-type]
PICTURE_FIELDS = ("source", "mask")


class LoraIn(Schema):
    id: uuid.UUID | None = Field(None, description="A LoRA's id (GET /loras).")
    name: str | None = Field(None, max_length=100, description="Or its name: as a <lora:name:weight> tag would.")
    weight: float = Field(1.0, description="The LoRA's strength.")


class GenerationIn(Schema):
    """A generation to make. Leave out what the model's defaults should decide."""

    prompt: str = Field(..., max_length=1000)
    negative_prompt: str = Field("", max_length=1000)
    model: str | None = Field(None, max_length=100, description="A model's name (GET /models); default: the "
                                                                 "studio's default model. Its defaults fill in "
                                                                 "steps, guidance and sampler.")
    mode: Mode | None = Field(None, description="Default: txt2img; img2img when a source is given, inpaint when a "
                                                "mask is too.")
    aspect: Aspect = Field("1:1", description="The size at the model's native resolution, unless width and height "
                                              "are given (txt2img; a canvas mode's size follows from its source).")
    width: int | None = Field(None, ge=8, le=4096)
    height: int | None = Field(None, ge=8, le=4096)
    steps: int | None = Field(None, ge=1, le=1000)
    guidance_scale: float | None = Field(None, ge=0, le=100)
    sampler: Sampler | None = None
    seed: int | None = Field(None, ge=0, description="Empty: random.")
    num_images: int = Field(1, ge=1, le=4)
    loras: list[LoraIn] = Field(default_factory=list, max_length=8,
                                description="In multipart: a JSON array in one field. <lora:name:w> tags in the "
                                            "prompt work too.")
    team: uuid.UUID | None = Field(None, description="A user key: save into this team's gallery (one you create "
                                                     "in). A team key always saves into its team.")
    bill_team: bool = Field(False, description="A user key with `team`: the team's wallet pays (your member cap "
                                               "applies).")
    source_image: uuid.UUID | None = Field(None, description="Start from one of your images (or your teams').")
    source: str | None = Field(None, description="Start from this picture: base64 (or a data: URL) of a PNG, "
                                                 "JPEG or WebP. In multipart: a file.")
    mask: str | None = Field(None, description="Inpaint: white where to repaint, base64 PNG. In multipart: a file.")
    strength: float = Field(0.75, ge=0, le=1, description="img2img/inpaint: how much to change.")
    mask_blur: int = Field(4, ge=0)
    masked_content: MaskedContent = "original"
    only_masked: bool = False
    only_masked_padding: int = Field(32, ge=0)
    outpaint_left: int = Field(0, ge=0)
    outpaint_top: int = Field(0, ge=0)
    outpaint_right: int = Field(0, ge=0)
    outpaint_bottom: int = Field(0, ge=0)


def _inlined(schema: dict) -> dict:
    """The schema with its $defs put in place of their $refs (the operation's own schema must not
    point at components that ninja never registered)."""
    definitions = schema.pop("$defs", {})

    def resolve(node):
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(definitions[node["$ref"].rsplit("/", 1)[-1]])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    return resolve(schema)


def openapi_request_body() -> dict:
    """Both ways to send one (ninja documents one content type per operation; this is both)."""
    schema = _inlined(GenerationIn.model_json_schema())
    multipart = json.loads(json.dumps(schema))
    for name in PICTURE_FIELDS:
        multipart["properties"][name] = {"type": "string", "format": "binary",
                                         "description": schema["properties"][name].get("description", "")}
    multipart["properties"]["loras"] = {"type": "string", "description": "A JSON array of {id or name, weight}."}
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": schema},
        "multipart/form-data": {"schema": multipart},
    }}}


# --- Reading the request -------------------------------------------------------------------------

@dataclass(frozen=True)
class ParsedRequest:
    body: GenerationIn
    raw: dict  # as sent, without files: what the Idempotency-Key fingerprint covers
    files: dict[str, bytes]  # source and mask, decoded


def _validation_problem(error: PydanticValidationError) -> ApiProblem:
    errors = [{"loc": ["body", *map(str, item["loc"])], "msg": item["msg"], "type": item["type"]}
              for item in error.errors(include_url=False)]
    first = errors[0]
    return ApiProblem("validation-error", f"{'.'.join(first['loc'][1:]) or 'body'}: {first['msg']}", errors=errors)


def _decode_picture(name: str, value: str) -> bytes:
    if value.startswith("data:"):
        value = value.partition(",")[2]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ApiProblem("validation-error", f"{name}: not valid base64",
                         errors=[{"loc": ["body", name], "msg": "not valid base64", "type": "base64"}]) from None


def _read_upload(upload: UploadedFile) -> bytes:
    return b"".join(upload.chunks())


def parse_request(request) -> ParsedRequest:
    content_type = request.content_type or ""
    files: dict[str, bytes] = {}
    if content_type == "multipart/form-data":
        raw = {key: request.POST.get(key) for key in request.POST}
        for name in PICTURE_FIELDS:
            if name in request.FILES:
                files[name] = _read_upload(request.FILES[name])
                raw.pop(name, None)
        if "loras" in raw:
            try:
                raw["loras"] = json.loads(raw["loras"] or "[]")
            except ValueError:
                raise ApiProblem("validation-error", "loras: not a JSON array", errors=[
                    {"loc": ["body", "loras"], "msg": "not a JSON array", "type": "json"}]) from None
    elif content_type in ("application/json", ""):
        try:
            raw = json.loads(request.body or b"null")
        except (ValueError, UnicodeDecodeError):
            raise ApiProblem("bad-request", "The body is not JSON.") from None
        if not isinstance(raw, dict):
            raise ApiProblem("bad-request", "The body must be a JSON object.")
    else:
        raise ApiProblem("unsupported-media-type", f"Send application/json or multipart/form-data, not {content_type}.")
    try:
        body = GenerationIn.model_validate(raw)
    except PydanticValidationError as error:
        raise _validation_problem(error) from None
    for name in PICTURE_FIELDS:
        if getattr(body, name) is not None and name not in files:
            files[name] = _decode_picture(name, getattr(body, name))
    return ParsedRequest(body=body, raw=raw, files=files)


# --- Into the web's form ----------------------------------------------------------------------------

def _mode(body: GenerationIn, files: dict) -> str:
    if body.mode is not None:
        return body.mode
    if body.source_image is None and "source" not in files:
        return JobMode.TXT2IMG
    return JobMode.INPAINT if "mask" in files else JobMode.IMG2IMG


def _chosen_model(body: GenerationIn, user):
    """The model asked for, if offered (an unknown one is the form's error to give), else the default."""
    offered = models_offered(user).filter(name=body.model).first() if body.model else None
    return offered or default_model()


def _private_models_user(actor):
    """Whose private models a key may use: its user's (a team key: none, it acts for the team)."""
    return actor.user if actor.team is None else None


def _form_data(body: GenerationIn, *, team, mode: str, user) -> dict:
    info = model_info(_chosen_model(body, user))
    prompt = body.prompt
    rows = [lora for lora in body.loras if lora.id is not None]
    for lora in body.loras:
        if lora.id is None and lora.name:
            prompt = f"{prompt} <lora:{lora.name}:{lora.weight:g}>"
    data = {
        "model": body.model, "prompt": prompt, "negative_prompt": body.negative_prompt, "aspect": body.aspect,
        "width": body.width, "height": body.height,
        "steps": body.steps if body.steps is not None else info.default_steps,
        "guidance_scale": body.guidance_scale if body.guidance_scale is not None else info.default_guidance_scale,
        "sampler": body.sampler or info.default_sampler, "seed": body.seed, "num_images": body.num_images,
        "save_to": str(team.pk) if team is not None else "", "bill_team": bool(team is not None and body.bill_team),
        "lora": [str(lora.id) for lora in rows], "lora_weight": [lora.weight for lora in rows],
    }
    if mode != JobMode.TXT2IMG:
        data.update(mode=mode, source_image=str(body.source_image) if body.source_image else "",
                    strength=body.strength, mask_blur=body.mask_blur, masked_content=body.masked_content,
                    only_masked=body.only_masked, only_masked_padding=body.only_masked_padding,
                    outpaint_left=body.outpaint_left, outpaint_top=body.outpaint_top,
                    outpaint_right=body.outpaint_right, outpaint_bottom=body.outpaint_bottom)
    return {key: ("" if value is None else value) for key, value in data.items()}


def bound_form(parsed: ParsedRequest, *, actor) -> CreateForm:
    """The web's form for this request, bound as if posted by `actor` (submit.KeyActor)."""
    body, files = parsed.body, parsed.files
    mode = _mode(body, files)
    if actor.team is not None:  # a team key: its team, always, and the team's wallet
        team, teams = actor.team, [actor.team]
        body = body.model_copy(update={"bill_team": True})
    else:
        teams = list(teams_user_can_save_into(actor.user))
        team = next((t for t in teams if t.pk == body.team), None) if body.team else None
        if body.team and team is None:
            raise ApiProblem("forbidden", "You cannot create images in that team (only its members can).")
    private_user = _private_models_user(actor)
    data = _form_data(body, team=team, mode=mode, user=private_user)
    info, offered = model_info(), models_offered(private_user)
    if mode == JobMode.TXT2IMG:
        return CreateForm(data, model_info=info, teams=teams, user=actor.user, models=offered)
    uploads = {name: SimpleUploadedFile(f"{name}.png", content) for name, content in files.items()}
    return CanvasForm(data, uploads, model_info=info, teams=teams, user=actor.user, models=offered)
