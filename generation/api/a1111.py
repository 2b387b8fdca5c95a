"""AUTOMATIC1111's API dialect (`/sdapi/v1/...`), so A1111's clients work unchanged: the model, the
samplers and the options a client reads when it connects; txt2img and img2img (a1111_generate.py);
the progress of the key's own job, interrupt, the LoRAs and png-info. Same keys (HTTP Basic as
`--api-auth`, or bearer), same rate limits and errors as /api/v1 (docs/api.md).

"The key's own" jobs: those whose credits were reserved through this key (the hold records it), so
two scripts on two keys of one user do not see or interrupt each other's work.
"""

from __future__ import annotations

from ninja import Field, Query, Router, Schema

from accounts.api import ApiProblem, api_key_of, problems, require_scope
from billing.models import EntryKind, LedgerEntry
from generation.api.a1111_generate import checkpoint_title, decode_picture, refused
from generation.api.a1111_generate import router as generate_router
from generation.api.common import key_user, require_any_scope
from generation.api.live import live_progress
from generation.api.loras import loras_usable_by
from generation.engine.contracts import SAMPLERS
from generation.engine.infotext import parse_infotext
from generation.models import Job, JobKind, JobState
from generation.png_info import MAX_INFOTEXT, MAX_PARAMETER_LINE
from generation.selectors import default_model
from generation.services import jobs as job_services
from generation.services.sd_models import builtin_model, models_to_list
from generation.services.uploads import UploadRefused, upload_read_png_text

router = Router(tags=["AUTOMATIC1111"])
router.add_router("", generate_router)
READ_SCOPES = ("generate", "read_images")


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


@router.get("/sd-models", response={200: list[SdModelOut], **problems()}, summary="A1111: the checkpoints")
def sd_models(request):
    offered = models_to_list(key_user(request))
    return [SdModelOut(title=checkpoint_title(model), model_name=model.name, hash=model.hash, sha256=None,
                       filename=model.path.rsplit("/", 1)[-1], config=None) for model in offered]


@router.get("/samplers", response={200: list[SdSamplerOut], **problems()}, summary="A1111: the samplers")
def sd_samplers(request):
    return [SdSamplerOut(name=label, aliases=[name], options={}) for name, label in SAMPLERS.items()]


class OptionsOut(Schema):
    sd_model_checkpoint: str
    sd_checkpoint_hash: str
    samples_format: str = "png"


@router.get("/options", response={200: OptionsOut, **problems()}, summary="A1111: the server's options (read only)")
def options(request):
    model = default_model() or builtin_model()
    return OptionsOut(sd_model_checkpoint=checkpoint_title(model), sd_checkpoint_hash=model.hash)


@router.post("/options", response={200: OptionsOut, **problems(403)},
             summary="A1111: changing options is refused on a shared server")
def options_set(request):
    raise ApiProblem(
        "forbidden", "This is a shared server: its options (the checkpoint among them) are not yours to change. "
        "Send per-request settings with the request instead (override_settings).",
    )


# --- The key's own jobs: progress and interrupt ------------------------------------------------------

def key_active_jobs(key) -> list[Job]:
    """The key's queued and running generations, running first, oldest first."""
    mine = Job.objects.filter(kind=JobKind.GENERATE).active()
    mine = mine.filter(team_id=key.owner_team_id) if key.owner_team_id else mine.filter(user_id=key.owner_user_id)
    jobs = {job.billing_subject: job for job in mine}
    through_key = set(LedgerEntry.objects.filter(api_key=key, kind=EntryKind.RESERVE, subject__in=list(jobs))
                      .values_list("subject", flat=True))
    return sorted((job for subject, job in jobs.items() if subject in through_key),
                  key=lambda job: (job.state != JobState.RUNNING, job.created_at))


class ProgressState(Schema):
    skipped: bool
    interrupted: bool
    job: str
    job_count: int
    job_timestamp: str
    job_no: int
    sampling_step: int
    sampling_steps: int


class ProgressOut(Schema):
    progress: float = Field(description="0 to 1: the key's running (else first queued) job.")
    eta_relative: float = Field(description="Seconds left, once measurable; 0 otherwise.")
    state: ProgressState
    current_image: str | None = Field(description="Base64 preview of the denoising, while running.")
    textinfo: str | None


class ProgressQuery(Schema):
    skip_current_image: bool = False


def _preview_base64(preview_url: str | None) -> str | None:
    """A data: URL's base64 payload; a preview served from a URL is not inlined."""
    if not preview_url or not preview_url.startswith("data:") or ";base64," not in preview_url:
        return None
    return preview_url.partition(",")[2]


def _idle() -> ProgressOut:
    state = ProgressState(skipped=False, interrupted=False, job="", job_count=0, job_timestamp="0", job_no=0,
                          sampling_step=0, sampling_steps=0)
    return ProgressOut(progress=0, eta_relative=0, state=state, current_image=None, textinfo=None)


@router.get("/progress", response={200: ProgressOut, **problems(403)}, summary="A1111: progress of the key's own job")
def progress(request, query: Query[ProgressQuery]):
    key = api_key_of(request)
    if not any(key.has_scope(scope) for scope in READ_SCOPES):
        raise ApiProblem("insufficient-scope", "Progress needs the 'generate' or 'read_images' scope.")
    jobs = key_active_jobs(key)
    if not jobs:
        return _idle()
    job = jobs[0]
    live = live_progress(job)
    running = job.state == JobState.RUNNING
    moment = job.started_at or job.created_at
    state = ProgressState(
        skipped=False, interrupted=job.cancel_requested, job=f"task({job.pk})", job_count=len(jobs),
        job_timestamp=moment.strftime("%Y%m%d%H%M%S"), job_no=0, sampling_step=live.step,
        sampling_steps=live.total_steps,
    )
    return ProgressOut(
        progress=round(live.step / live.total_steps, 4) if running and live.total_steps else 0.0,
        eta_relative=live.eta_seconds or 0.0, state=state,
        current_image=None if query.skip_current_image or not running else _preview_base64(live.preview_url),
        textinfo=f"Step {live.step} of {live.total_steps}" if running else "Waiting in the queue",
    )


class InterruptOut(Schema):
    interrupted: int = Field(description="How many of the key's jobs were stopped or dequeued.")


@router.post("/interrupt", response={200: InterruptOut, **problems(403)},
             summary="A1111: stop the key's own unfinished jobs",
             description="Cancels every queued or running generation made through this key: a queued one at once "
                         "(refunded), a running one at its next step (not charged). Its waiting txt2img or img2img "
                         "call answers 409. Other keys' jobs, and jobs made on the web, are not touched.")
def interrupt(request):
    key = require_scope(request, "generate")
    jobs = key_active_jobs(key)
    for job in jobs:
        job_services.job_cancel(job=job)
    return InterruptOut(interrupted=len(jobs))


# --- LoRAs and png-info -------------------------------------------------------------------------------

class LoraOut(Schema):
    name: str = Field(description="What `<lora:name:weight>` in a prompt calls it.")
    alias: str
    path: str = Field(description="Not a file on this server: the LoRA's id, as `lora/<id>`.")
    metadata: dict


@router.get("/loras", response={200: list[LoraOut], **problems(403)}, summary="A1111: the LoRAs this key may use")
def loras(request):
    key = require_any_scope(request, READ_SCOPES, "LoRAs")
    return [
        LoraOut(name=lora.name, alias=lora.name, path=f"lora/{lora.pk}", metadata={
            "ss_sd_model_name": lora.base_model_name, "ss_network_dim": lora.rank, "ss_steps": lora.steps,
            "sshs_model_hash": lora.sha256, "ss_tag_frequency": {}, "trigger_words": lora.trigger_words,
        })
        for lora in loras_usable_by(key)
    ]


class PngInfoIn(Schema):
    image: str = Field(description="Base64 PNG (a data: URL too).")


class PngInfoOut(Schema):
    info: str = Field(description="The `parameters` text chunk (A1111's infotext), or empty.")
    items: dict[str, str] = Field(description="The PNG's other text chunks.")
    parameters: dict[str, str] = Field(description="The infotext read into keys: Prompt, Negative prompt, Steps, ...")


@router.post("/png-info", response={200: PngInfoOut, **problems(422)}, summary="A1111: a PNG's generation parameters")
def png_info(request, body: PngInfoIn):
    try:
        text = upload_read_png_text(data=decode_picture("image", body.image))
    except UploadRefused as error:
        raise refused("image", str(error)) from None
    info = text.pop("parameters", "")
    last_line = info.replace("\r\n", "\n").rsplit("\n", 1)[-1]
    readable = info and len(info) <= MAX_INFOTEXT and len(last_line) <= MAX_PARAMETER_LINE
    return PngInfoOut(info=info, items=text, parameters=parse_infotext(info) if readable else {})
