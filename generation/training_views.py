"""Fine-tuning pages (docs/fine-tuning.md, "Pages"): the trainings list, a new training in two
steps, a training's live page, its sample and training images.

A new training: step 1 (`training_new`) takes the pictures and the instance prompt and keeps
them as a draft (checked PNGs in storage under training-drafts/<user>/<draft>/, named in the
session; one draft per session, a new one replaces it and its files). Step 2
(`training_settings`) shows a caption per picture and the settings with the live cost, and its
submit goes through services.training_submit, which validates, reserves the credits and queues
the job; any refusal is a form error with a 4xx status and nothing charged.
"""

from __future__ import annotations

import uuid

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from billing.selectors import wallet_balance
from billing.services import InsufficientCredits
from generation import permissions, selectors, services, serving, training_selectors
from generation.engine.contracts import InvalidRequest
from generation.models import Image, Job
from generation.services.files import files_delete_now
from generation.training_forms import PRESET_HELP, TrainingImagesForm, TrainingQuoteForm, TrainingSettingsForm

DRAFT_KEY = "training_draft"
GALLERY_PICKS = 48  # the newest images of mine that step 1 offers


def _get_training(request: HttpRequest, job_id) -> Job:
    try:
        return training_selectors.training_for_user(request.user, job_id)
    except Job.DoesNotExist:
        raise Http404("No such training.") from None


# --- The draft between step 1 and step 2 --------------------------------------------------------

def _draft(request: HttpRequest) -> dict | None:
    """The session's draft, if its pictures are still stored (the sweeper removes abandoned ones)."""
    draft = request.session.get(DRAFT_KEY)
    if not (isinstance(draft, dict) and draft.get("images")):
        return None
    if not all(default_storage.exists(item.get("file", "")) for item in draft["images"]):
        request.session.pop(DRAFT_KEY)
        return None
    return draft


def _drop_draft(request: HttpRequest) -> None:
    draft = request.session.pop(DRAFT_KEY, None)
    if isinstance(draft, dict):
        files_delete_now([item.get("file", "") for item in draft.get("images", [])])


def _save_draft(request: HttpRequest, form: TrainingImagesForm) -> None:
    _drop_draft(request)
    folder = f"training-drafts/{request.user.pk}/{uuid.uuid4().hex}"
    images = []
    for index, (png, source) in enumerate(form.pictures):
        name = default_storage.save(f"{folder}/{index}.png", ContentFile(png))
        images.append({"file": name, "source_image": str(source.pk) if source else None})
    request.session[DRAFT_KEY] = {"images": images, "instance_prompt": form.cleaned_data["instance_prompt"]}


def _draft_inputs(draft: dict, captions: list[str], user) -> list:
    """The draft's pictures as services.TrainingImageInput, with their captions."""
    sources = {str(image.pk): image for image in Image.objects.visible_to(user).filter(
        pk__in=[item["source_image"] for item in draft["images"] if item.get("source_image")])}
    inputs = []
    for item, caption in zip(draft["images"], captions, strict=True):
        with default_storage.open(item["file"], "rb") as handle:
            png = handle.read()
        inputs.append(services.TrainingImageInput(png=png, caption=caption,
                                                  source_image=sources.get(item.get("source_image") or "")))
    return inputs


# --- Pages ---------------------------------------------------------------------------------------

@login_required
@require_GET
def trainings(request: HttpRequest) -> HttpResponse:
    jobs = training_selectors.trainings_for_user(request.user)
    return render(request, "generation/trainings.html", {"jobs": jobs, "tab": "trainings"})


def _gallery_picks(user) -> list[Image]:
    return list(selectors.gallery_images(user).filter(owner=user).order_by("-created_at")[:GALLERY_PICKS])


@login_required
@require_http_methods(["GET", "POST"])
def training_new(request: HttpRequest) -> HttpResponse:
    """Step 1: the pictures (uploaded or picked from my images) and the instance prompt."""
    if not permissions.can_start_training(request.user):
        raise PermissionDenied("You cannot start a training.")
    gallery = _gallery_picks(request.user)
    if request.method == "GET":
        draft = _draft(request)
        form = TrainingImagesForm(user=request.user, gallery=gallery,
                                  initial={"instance_prompt": (draft or {}).get("instance_prompt", "")})
        return render(request, "generation/training_new.html", {"form": form, "tab": "new", "draft": draft})
    form = TrainingImagesForm(request.POST, request.FILES, user=request.user, gallery=gallery)
    if not form.is_valid():
        return render(request, "generation/training_new.html", {"form": form, "tab": "new"}, status=form.status)
    _save_draft(request, form)
    return redirect("generation:training_settings")


def _settings_form(request: HttpRequest, draft: dict, data=None) -> TrainingSettingsForm:
    info = selectors.own_model_info()  # trainings start from the studio's own model
    initial = {"instance_prompt": draft["instance_prompt"], "method": "lora", "preset": "quick",
               "prior_preservation": True, "num_class_images": 20}
    return TrainingSettingsForm(data, initial=initial, image_count=len(draft["images"]),
                                native_resolution=min(info.native_width, info.native_height),
                                may_full_finetune=permissions.can_full_finetune(request.user),
                                instance_prompt=draft["instance_prompt"])


def _settings_page(request: HttpRequest, form: TrainingSettingsForm, draft: dict,
                   status: int = 200) -> HttpResponse:
    pictures = [
        (reverse("generation:training_draft_image", args=[index]), field)
        for index, field in enumerate(form.caption_fields())
    ]
    context = {"form": form, "pictures": pictures, "tab": "new", "presets": _presets(),
               "model_info": selectors.own_model_info()}
    return render(request, "generation/training_settings.html", context, status=status)


def _presets() -> list[dict]:
    from generation.engine.training.spec import PRESETS

    return [{"key": key, "help": PRESET_HELP.get(key, ""), **values} for key, values in PRESETS.items()]


@login_required
@require_http_methods(["GET", "POST"])
def training_settings(request: HttpRequest) -> HttpResponse:
    """Step 2: captions and settings, the cost, Start. Without a draft: back to step 1."""
    draft = _draft(request)
    if draft is None:
        messages.info(request, "Choose the pictures first.")
        return redirect("generation:training_new")
    if request.method == "GET":
        return _settings_page(request, _settings_form(request, draft), draft)
    form = _settings_form(request, draft, request.POST)
    if not form.is_valid():
        return _settings_page(request, form, draft, status=400)
    status = 400
    try:
        images = _draft_inputs(draft, form.captions(), request.user)
        job = services.training_submit(user=request.user, name=form.cleaned_data["name"],
                                       spec_fields=form.spec_fields(), images=images)
    except FileNotFoundError:
        _drop_draft(request)
        messages.error(request, "The pictures of this draft are gone: choose them again.")
        return redirect("generation:training_new")
    except InvalidRequest as error:
        form.add_error(error.field if error.field in form.fields else None, error.message)
    except services.TrainingRefused as error:
        field = getattr(error, "field", "") or None
        form.add_error(field if field in form.fields else None, getattr(error, "message", str(error)))
        status = getattr(error, "status", 400)
    except InsufficientCredits as error:
        form.add_error(None, str(error))
        form.needs_credits = True
        status = 402
    except services.TooManyActiveJobs as error:
        form.add_error(None, str(error))
        status = 429
    else:
        _drop_draft(request)
        return redirect("generation:training_detail", job_id=job.pk)
    return _settings_page(request, form, draft, status=status)


@login_required
@require_GET
def training_draft_image(request: HttpRequest, index: int) -> HttpResponse:
    """A picture of this session's draft (the session is the permission)."""
    draft = _draft(request)
    if draft is None or not 0 <= index < len(draft["images"]):
        raise Http404("No such picture.")
    return serving.serve_file(draft["images"][index]["file"], "image/png")


@login_required
@require_GET
def training_quote(request: HttpRequest) -> HttpResponse:
    """The live cost of step 2's settings, and the balance. Bad input: a neutral fragment, 200."""
    draft = _draft(request)
    info = selectors.own_model_info()
    fields = TrainingQuoteForm(request.GET).price_fields(
        num_images=len(draft["images"]) if draft else 0,
        native_resolution=min(info.native_width, info.native_height))
    cost = None
    if fields is not None and draft is not None:
        try:
            cost = services.training_cost(**fields)
        except (ValueError, InvalidRequest):
            cost = None
    available = wallet_balance(user=request.user)[0]
    context = {"cost": cost, "available": available, "team_pays": False,
               "affordable": cost is not None and cost <= available}
    return render(request, "generation/_quote.html", context)


@login_required
@require_GET
def training_detail(request: HttpRequest, job_id) -> HttpResponse:
    job = _get_training(request, job_id)
    context = training_selectors.training_context(job, request.user)
    return render(request, "generation/training_detail.html", {**context, "tab": "trainings"})


@login_required
@require_GET
def training_panel(request: HttpRequest, job_id) -> HttpResponse:
    """The live panel of one training: what the page polls when its websocket is gone."""
    job = _get_training(request, job_id)
    context = training_selectors.training_context(job, request.user)
    return render(request, "generation/_training_panel.html", context)


@login_required
@require_POST
def training_cancel(request: HttpRequest, job_id) -> HttpResponse:
    """Cancel: a queued training at once; a running one stops at its next step and keeps the LoRA
    of its last checkpoint (the worker's services decide what it costs)."""
    job = _get_training(request, job_id)
    if not permissions.can_cancel_job(request.user, job):
        raise PermissionDenied("Only its creator can cancel this training.")
    job = services.job_cancel(job=job)
    job = _get_training(request, job.pk)
    if request.htmx:
        context = training_selectors.training_context(job, request.user)
        return render(request, "generation/_training_head.html", context)
    return redirect("generation:training_detail", job_id=job.pk)


@login_required
@require_GET
def training_sample(request: HttpRequest, job_id, step: int, index: int) -> HttpResponse:
    """A sample image the trainer made at `step`, for whoever may see the training."""
    name = training_selectors.sample_file(_get_training(request, job_id), step, index)
    if not name:
        raise Http404("No such sample.")
    return serving.serve_file(name, "image/png")


@login_required
@require_GET
def training_image(request: HttpRequest, job_id, index: int) -> HttpResponse:
    """One picture of a training's set, for whoever may see the training."""
    job = _get_training(request, job_id)
    picture = next((image for image in job.training.images.all() if image.index == index), None)
    if picture is None:
        raise Http404("No such picture.")
    return serving.serve_file(picture.file.name, "image/png")


