"""The canvas page: image to image, inpainting and outpainting on an uploaded image or one of mine.

GET shows the editor (a source from ?image=<id>, or the source, mask and settings of an earlier
canvas job from ?from=<job id>); POST is an ordinary multipart form post (the editor fills the
mask file field with a PNG the size of the image) that submits one job like Create does.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods
from django_htmx.http import HttpResponseClientRedirect

from billing.services import InsufficientCredits
from generation import selectors, services, serving
from generation.canvas_forms import CanvasForm
from generation.models import CANVAS_FIELDS, Image, Job, JobMode
from generation.views import remembered_model


def _source_url(request: HttpRequest) -> tuple[dict, str | None]:
    """Initial values and the URL the editor loads its source from (?image= or ?from=)."""
    if image_id := request.GET.get("image"):
        try:
            image = selectors.image_for_user(request.user, image_id)
        except (Image.DoesNotExist, ValidationError, ValueError):
            raise Http404("No such image.") from None
        initial = {"source_image": image.pk, "prompt": image.job.prompt, "negative_prompt": image.job.negative_prompt}
        return initial, reverse("generation:image_file", args=[image.pk])
    if job_id := request.GET.get("from"):
        try:
            job = selectors.job_for_user(request.user, job_id)
        except (Job.DoesNotExist, ValidationError, ValueError):
            raise Http404("No such job.") from None
        if not job.uses_canvas:
            raise Http404("That job did not use the canvas.")
        initial = {name: getattr(job, name) for name in (*CANVAS_FIELDS, "prompt", "negative_prompt", "steps",
                                                          "guidance_scale", "sampler", "num_images", "seed")}
        # An outpaint job kept its padded canvas and mask: it is reproduced as that inpaint.
        initial["mode"] = JobMode.INPAINT if job.mode == JobMode.OUTPAINT else job.mode
        return initial, reverse("generation:job_source", args=[job.pk])
    return {}, None


def _context(request: HttpRequest, form: CanvasForm, source_url: str | None, mask_url: str | None = None) -> dict:
    return {"form": form, "model_info": form.model_info, "source_url": source_url, "mask_url": mask_url}


@login_required
@require_http_methods(["GET", "POST"])
def canvas(request: HttpRequest) -> HttpResponse:
    """The canvas works on one model, the one Create last used (or ?model=): the editor sizes its
    canvas by that model's native and largest sizes, so the model is changed on Create, not here."""
    teams = list(selectors.teams_user_can_save_into(request.user))
    if request.method == "GET":
        model = remembered_model(request)
        info = selectors.model_info(model)
        initial, source_url = _source_url(request)
        initial["model"] = model
        mask_url = None
        if (job_id := request.GET.get("from")) and initial.get("mode") != JobMode.IMG2IMG:
            mask_url = reverse("generation:job_mask", args=[job_id])
        form = CanvasForm(initial=initial, model_info=info, teams=teams, user=request.user,
                          models=selectors.models_offered(request.user))
        return render(request, "generation/canvas.html", _context(request, form, source_url, mask_url))

    form = CanvasForm(request.POST, request.FILES, model_info=selectors.model_info(), teams=teams, user=request.user,
                      models=selectors.models_offered(request.user))
    status = 400
    if form.is_valid():
        try:
            job = services.job_submit(user=request.user, **form.submit_fields(), canvas=form.canvas)
        except InsufficientCredits as error:
            form.add_error(None, str(error))
            form.needs_credits = not form.destination()["bill_team"]  # a team's wallet is topped up by its admins
            status = 402
        except services.TooManyActiveJobs as error:
            form.add_error(None, str(error))
            status = 429
        except services.TeamNotAllowed as error:
            form.add_error("save_to", str(error))
            status = 403
        except services.ModelNotUsable as error:
            form.add_error("model", str(error))
            status = 409
        except services.LoraNotAllowed as error:  # unshared or deleted since the form was checked
            form.add_error(None, str(error))
            status = 403
        else:
            if request.htmx:
                return HttpResponseClientRedirect(reverse("generation:job_detail", args=[job.pk]))
            return redirect("generation:job_detail", job_id=job.pk)
    source_image = form.cleaned_data.get("source_image") if hasattr(form, "cleaned_data") else None
    source_url = reverse("generation:image_file", args=[source_image.pk]) if source_image else None
    return render(request, "generation/canvas.html", _context(request, form, source_url), status=status)


def _job_with_canvas(request: HttpRequest, job_id) -> Job:
    try:
        job = selectors.job_for_user(request.user, job_id)
    except Job.DoesNotExist:
        raise Http404("No such job.") from None
    if not job.uses_canvas:
        raise Http404("That job has no source image.")
    return job


@login_required
@require_GET
def job_source(request: HttpRequest, job_id) -> HttpResponse:
    """The source a canvas job worked on (an outpaint's padded canvas), for whoever may see the job."""
    return serving.serve_file(_job_with_canvas(request, job_id).source_file.name, "image/png")


@login_required
@require_GET
def job_mask(request: HttpRequest, job_id) -> HttpResponse:
    job = _job_with_canvas(request, job_id)
    if not job.mask_file:
        raise Http404("That job has no mask.")
    return serving.serve_file(job.mask_file.name, "image/png")
