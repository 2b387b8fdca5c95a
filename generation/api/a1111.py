"""AUTOMATIC1111's API dialect (`/sdapi/v1/...`), read-only in this pass: the model, the samplers and
the options a client reads when it connects. Same keys (HTTP Basic as `--api-auth`, or bearer), same
rate limits and errors as /api/v1. txt2img, img2img, progress, interrupt, loras and png-info come
with the generation endpoints (docs/api.md)."""

from __future__ import annotations

from ninja import Field, Router, Schema

from accounts.api import ApiProblem, problems
from generation.engine.contracts import SAMPLERS
from generation.selectors import model_info

router = Router(tags=["AUTOMATIC1111"])


class SdModelOut(Schema):
    title: str = Field(description="`name [hash]`, what A1111 clients show and send back.")
    model_name: str
    hash: str
    sha256: str | None
    filename: str
    config: str | None


class SdSamplerOut(Schema):
    name: str
    aliases: list[str]
    options: dict[str, str]


def _title() -> str:
    info = model_info()
    return f"{info.name} [{info.hash}]"


@router.get("/sd-models", response={200: list[SdModelOut], **problems()}, summary="A1111: the checkpoints")
def sd_models(request):
    info = model_info()
    return [SdModelOut(title=_title(), model_name=info.name, hash=info.hash, sha256=None, filename=info.name,
                       config=None)]


@router.get("/samplers", response={200: list[SdSamplerOut], **problems()}, summary="A1111: the samplers")
def sd_samplers(request):
    return [SdSamplerOut(name=label, aliases=[name], options={}) for name, label in SAMPLERS.items()]


class OptionsOut(Schema):
    sd_model_checkpoint: str
    sd_checkpoint_hash: str
    samples_format: str = "png"


@router.get("/options", response={200: OptionsOut, **problems()}, summary="A1111: the server's options (read only)")
def options(request):
    return OptionsOut(sd_model_checkpoint=_title(), sd_checkpoint_hash=model_info().hash)


@router.post("/options", response={200: OptionsOut, **problems(403)},
             summary="A1111: changing options is refused on a shared server")
def options_set(request):
    raise ApiProblem(
        "forbidden", "This is a shared server: its options (the checkpoint among them) are not yours to change. "
        "Send per-request settings with the request instead (override_settings).",
    )
