"""Thin views: a full page for a normal request, a named partial for an htmx one."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import reswap, retarget, trigger_client_event

from accounts import permissions as team_permissions
from billing.services import InsufficientCredits, MemberCapReached
from generation import permissions, selectors, services, serving
from generation.engine.contracts import MAX_SEED
from generation.forms import ASPECT_RATIOS, CreateForm, size_for_aspect
from generation.gallery_forms import GalleryForm, encode_cursor
from generation.models import Image, Job
from generation.routing import gallery_live_url


def home(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("generation:create")
    return render(request, "generation/home.html")


def _get_job(request: HttpRequest, job_id) -> Job:
    try:
        return selectors.job_for_user(request.user, job_id)
    except Job.DoesNotExist:
        raise Http404("No such job.") from None


def _get_image(request: HttpRequest, image_id) -> Image:
    try:
        return selectors.image_for_user(request.user, image_id)
    except Image.DoesNotExist:
        raise Http404("No such image.") from None


def _initial_from_job(request: HttpRequest) -> dict:
    """?from=<job id> reuses a job's settings; &seed=<n> also reuses that seed."""
    job_id = request.GET.get("from")
    if not job_id:
        return {}
    try:
        job = selectors.job_for_user(request.user, job_id)
    except (Job.DoesNotExist, ValidationError, ValueError):
        return {}
    if job.is_training:  # a training's settings are not a picture's
        return {}
    initial = {
        "prompt": job.prompt, "negative_prompt": job.negative_prompt, "steps": job.steps,
        "guidance_scale": job.guidance_scale, "sampler": job.sampler, "num_images": job.num_images,
    }
    model = selectors.models_offered(request.user).filter(pk=job.model_id).first() if job.model_id else None
    if model is not None:  # its model, if I may still pick it (else the one Create starts with)
        initial["model"] = model
    info = selectors.model_info(model)
    aspect = next((key for key in ASPECT_RATIOS if size_for_aspect(key, info) == (job.width, job.height)), None)
    if aspect:
        initial["aspect"] = aspect
    else:
        initial.update(width=job.width, height=job.height)
    if (seed := _seed_from_query(request.GET.get("seed"))) is not None:
        initial["seed"] = seed
    if job.loras:  # the picker's rows; the form leaves out (and names) those I cannot use now
        initial["loras"] = [(entry.get("id", ""), entry.get("weight", 1.0)) for entry in job.loras]
        initial["loras_snapshot"] = job.loras
    return initial


def _initial_loras(request: HttpRequest, form: CreateForm) -> None:
    """?lora=<LoRA id> (the LoRA pages' "Use on Create") preselects that LoRA at weight 1 when I
    may use it; the rows reused from a job keep only the LoRAs I may still use, and the others are
    named above the picker."""
    usable = {option for option, _ in form.lora_options()}
    names = {str(entry.get("id")): entry.get("name", "?") for entry in form.initial.pop("loras_snapshot", [])}
    rows = [(lora_id, weight) for lora_id, weight in form.initial.get("loras", [])]
    form.lora_notes = [f"The LoRA {names.get(str(lora_id), lora_id)} is no longer yours to use; it is left out."
                       for lora_id, _ in rows if str(lora_id) not in usable]
    rows = [(lora_id, weight) for lora_id, weight in rows if str(lora_id) in usable]
    asked = request.GET.get("lora", "")[:40]
    if asked in usable and all(str(lora_id) != asked for lora_id, _ in rows):
        rows.append((asked, 1.0))
    if rows:
        form.initial["loras"] = rows
    else:
        form.initial.pop("loras", None)


def _seed_from_query(value: str | None) -> int | None:
    """A reusable seed from ?seed=, or None: only ASCII digits, at most MAX_SEED (int() would take
    "²" or "٣" and fail on them, and refuses numbers over 4300 digits)."""
    if not value or len(value) > len(str(MAX_SEED)) or not (value.isascii() and value.isdigit()):
        return None
    seed = int(value)
    return seed if seed <= MAX_SEED else None


def _form_error_response(request: HttpRequest, form: CreateForm, status: int) -> HttpResponse:
    context = {"form": form, "model_info": form.model_info}
    if request.htmx:
        response = render(request, "generation/create.html#create-form", context, status=status)
        return reswap(retarget(response, "#create-form"), "outerHTML")
    context["recent_jobs"] = selectors.jobs_for_user(request.user)
    return render(request, "generation/create.html", context, status=status)


DESTINATION_KEY = "create_destination"  # the session remembers the last "Save to" and "Bill to team"
MODEL_KEY = "create_model"  # and the last model picked (selectors.model_remembered)


def remembered_model(request: HttpRequest):
    """The model a Create or canvas page starts with: ?model=, else the session's last pick, else
    the user's last job's, else the default (selectors.model_remembered)."""
    return selectors.model_remembered(request.user, request.GET.get("model") or request.session.get(MODEL_KEY))


def _remember(request: HttpRequest, key: str, value) -> None:
    """Keep a choice in the session, writing the session only when it changed (a submit's own
    time: most submits repeat the last one's choices)."""
    if request.session.get(key) != value:
        request.session[key] = value


def _model_initial(model) -> dict:
    """The form's initial model, and its default size when staff set one (as width and height)."""
    if model is None:
        return {}
    if model.default_width and model.default_height:
        return {"model": model, "width": model.default_width, "height": model.default_height}
    return {"model": model}


def _remembered_destination(request: HttpRequest) -> dict:
    """The initial "Save to" (a ?save_to=<team id> link wins) and "Bill to team"; the form's
    choices drop a team the user may no longer save into."""
    if "save_to" in request.GET:
        return {"save_to": request.GET["save_to"][:40], "bill_team": False}
    remembered = request.session.get(DESTINATION_KEY)
    if not remembered or not remembered.get("save_to"):
        return {}  # My images, billed to me: the form's defaults
    return {"save_to": remembered["save_to"], "bill_team": bool(remembered.get("bill_team"))}


def _credits_message(error: InsufficientCredits, destination: dict) -> str:
    """Billing's message, which speaks of "you"; when the team's wallet is short, say so."""
    if not destination["bill_team"] or isinstance(error, MemberCapReached):
        return str(error)
    return (f"Not enough of {destination['team'].name}'s credits: this needs {error.needed}, the team has "
            f"{error.available}. Ask a team admin to add some, or untick “Bill to team”.")


@login_required
@require_http_methods(["GET", "POST"])
def create(request: HttpRequest) -> HttpResponse:
    teams = list(selectors.teams_user_can_save_into(request.user))
    offered = selectors.models_offered(request.user)
    if request.method == "GET":
        from_job = _initial_from_job(request)
        model = from_job.get("model") or remembered_model(request)
        info = selectors.model_info(model)
        initial = {**_remembered_destination(request), **_model_initial(model), **from_job}
        form = CreateForm(initial=initial, model_info=info, teams=teams, user=request.user, models=offered)
        if initial.get("save_to", "") not in form.teams:  # a team I may no longer create in
            for key in ("save_to", "bill_team"):
                form.initial.pop(key, None)
        _initial_loras(request, form)
        context = {"form": form, "model_info": info, "recent_jobs": selectors.jobs_for_user(request.user)}
        return render(request, "generation/create.html", context)

    form = CreateForm(request.POST, model_info=selectors.model_info(), teams=teams, user=request.user, models=offered)
    if not form.is_valid():
        return _form_error_response(request, form, status=400)
    destination = form.destination()
    try:
        job = services.job_submit(user=request.user, **form.submit_fields())
    except InsufficientCredits as error:  # MemberCapReached too: its message names the cap
        form.add_error(None, _credits_message(error, destination))
        form.needs_credits = not destination["bill_team"]
        return _form_error_response(request, form, status=402)
    except services.TooManyActiveJobs as error:
        form.add_error(None, str(error))
        return _form_error_response(request, form, status=429)
    except services.TeamNotAllowed as error:  # the role changed since the form was drawn
        form.add_error("save_to", str(error))
        return _form_error_response(request, form, status=403)
    except services.LoraNotAllowed as error:  # unshared or deleted since the form was checked
        form.add_error(None, str(error))
        return _form_error_response(request, form, status=403)
    except services.ModelNotUsable as error:  # disabled or marked broken since the form was drawn
        form.add_error("model", str(error))
        return _form_error_response(request, form, status=409)
    team = destination["team"]
    _remember(request, DESTINATION_KEY, {"save_to": str(team.pk) if team else "", "bill_team": destination["bill_team"]})
    _remember(request, MODEL_KEY, job.model.name)
    if request.htmx:
        response = render(request, "generation/_job_panel.html", selectors.job_context(job), status=201)
        return trigger_client_event(response, "job-submitted")  # the cost quote refreshes its balance
    return redirect("generation:job_detail", job_id=job.pk)


@login_required
@require_GET
def job_list(request: HttpRequest) -> HttpResponse:
    jobs = selectors.jobs_for_user(request.user, limit=60)
    return render(request, "generation/job_list.html", {"jobs": jobs})


@login_required
@require_GET
def job_detail(request: HttpRequest, job_id) -> HttpResponse:
    job = _get_job(request, job_id)
    if job.is_training:  # a training has its own page (docs/fine-tuning.md)
        return redirect("generation:training_detail", job_id=job.pk)
    context = {**selectors.job_context(job), "loras": selectors.job_loras(job, request.user)}
    return render(request, "generation/job_detail.html", context)


@login_required
@require_GET
def job_panel(request: HttpRequest, job_id) -> HttpResponse:
    """The live panel of one job: what a page polls when its websocket is gone."""
    return render(request, "generation/_job_panel.html", selectors.job_context(_get_job(request, job_id)))


@login_required
@require_POST
def job_cancel(request: HttpRequest, job_id) -> HttpResponse:
    job = _get_job(request, job_id)
    if not permissions.can_cancel_job(request.user, job):
        raise PermissionDenied("Only its creator or a team admin can cancel this job.")
    job = services.job_cancel(job=job)
    if request.htmx:
        return render(request, "generation/_job_panel.html", selectors.job_context(job))
    return redirect("generation:job_detail", job_id=job.pk)


@login_required
@require_GET
def image_detail(request: HttpRequest, image_id) -> HttpResponse:
    return image_page(request, _get_image(request, image_id))


def image_page(request: HttpRequest, image: Image, *, extra: dict | None = None,
               status: int = 200) -> HttpResponse:
    """The image page; `extra` carries a panel's error when a plain form post is answered here."""
    user = request.user
    may = {"change": permissions.can_change_image(user, image), "delete": permissions.can_delete_image(user, image)}
    context = {
        "image": image, "job": image.job, "here": request.get_full_path(), "may": may,
        "loras": selectors.job_loras(image.job, user),
        **selectors.image_collections_panel(user, image), **selectors.image_team_panel(user, image),
        **(extra or {}),
    }
    return render(request, "generation/image_detail.html", context, status=status)


@login_required
@require_GET
def image_file(request: HttpRequest, image_id) -> FileResponse:
    return serving.image_original(_get_image(request, image_id), download="download" in request.GET)


@login_required
@require_GET
def image_thumbnail(request: HttpRequest, image_id) -> FileResponse:
    return serving.image_thumbnail(_get_image(request, image_id))


# --- The gallery ------------------------------------------------------------------------------------

def _gallery_next_url(request: HttpRequest, gallery_url: str, next_after) -> str | None:
    if next_after is None:
        return None
    query = request.GET.copy()
    query["after"] = encode_cursor(*next_after)
    return f"{gallery_url}?{query.urlencode()}"


def _gallery_first_page_url(request: HttpRequest, gallery_url: str, form: GalleryForm) -> str | None:
    if not form.cleaned_data["after"]:
        return None
    query = request.GET.copy()
    query.pop("after")
    return f"{gallery_url}?{query.urlencode()}"


def gallery_response(request: HttpRequest, *, gallery_url: str, title: str, team=None, collection=None,
                     team_role: str | None = None, extra: dict | None = None,
                     template: str = "generation/gallery.html") -> HttpResponse:
    """One gallery page (my images, a team's, a collection's): filters, a page of tiles, the bulk
    bar; the htmx partial for "load more". The same queries whatever the number of images.
    `team_role`: the user's role in `team` (the caller checked it may view the team)."""
    user = request.user
    filter_by = [] if collection is not None else selectors.collections_to_filter_by(user, team=team)
    # Favourites are their owner's marks: a team gallery offers no such filter.
    form = GalleryForm(request.GET, sizes=selectors.gallery_sizes(user, team=team, collection=collection),
                       models=selectors.gallery_models(user, team=team, collection=collection),
                       collections=filter_by, favourites=team is None)
    context = {
        "form": form, "images": [], "title": title, "gallery_url": gallery_url, "team": team,
        "show_owner": team is not None or collection is not None, "here": request.get_full_path(),
        **(extra or {}),
    }
    if not form.is_valid():
        return render(request, template, context, status=400)
    filters = {"collection": collection, **form.filters()}  # a collection's page, or the filter's choice
    images, next_after = selectors.gallery_page(user, team=team, **filters)
    if collection is None:  # new images join the top of an unfiltered first page, live (docs/realtime.md)
        context["live_url"] = gallery_live_url(filters=form.filters(), here=request.get_full_path(),
                                               team_id=team.pk if team is not None else None)
    for image in images:  # a teammate's tile offers no favourite or delete (the image page does, to admins)
        image.read_only = not permissions.can_change_image(user, image)
    context.update(images=images, next_url=_gallery_next_url(request, gallery_url, next_after),
                   first_page_url=_gallery_first_page_url(request, gallery_url, form))
    if request.htmx:
        return render(request, "generation/_gallery_page.html", context)
    context.update(bulk_collections=list(selectors.collections_user_can_change(user)),
                   **_bulk_abilities(user, team, team_role))
    return render(request, template, context)


def _bulk_abilities(user, team, team_role: str | None) -> dict:
    """What the bulk bar offers. In a team gallery a viewer only looks (add to their own
    collections, download): deleting and sharing into a team are for those who may contribute
    (their own images; admins any), so the bar does not offer what every image would refuse."""
    contributes = team is None or team_permissions.can_contribute(team_role)
    return {
        "bulk_can_delete": contributes,
        "bulk_teams": list(selectors.teams_user_can_save_into(user)) if contributes else [],
    }


@login_required
@require_GET
def gallery(request: HttpRequest) -> HttpResponse:
    """All my images, newest first, a page at a time; the sentinel tile of each page fetches the
    next one (htmx), or is a plain "Load more" link."""
    return gallery_response(request, gallery_url=reverse("generation:gallery"), title="Gallery")


def _back_to(request: HttpRequest, fallback: str) -> str:
    """The page a plain form came from (`next`), if it is ours; else `fallback`."""
    target = request.POST.get("next", "")
    ours = {request.get_host()}
    if url_has_allowed_host_and_scheme(target, allowed_hosts=ours, require_https=request.is_secure()):
        return target
    return fallback


@login_required
@require_POST
def image_favourite(request: HttpRequest, image_id) -> HttpResponse:
    image = _get_image(request, image_id)
    if not permissions.can_change_image(request.user, image):
        raise PermissionDenied("Only the image's creator can favourite it.")
    value = request.POST.get("favourite")
    if value not in ("1", "0"):
        return HttpResponseBadRequest("favourite must be 1 or 0.")
    image = services.image_set_favourite(image=image, favourite=value == "1")
    if request.htmx:
        context = {"image": image, "here": request.POST.get("next", "")}
        return render(request, "generation/_gallery_favourite.html", context)
    return redirect(_back_to(request, reverse("generation:image_detail", args=[image.pk])))


@login_required
@require_http_methods(["GET", "POST"])
def image_delete(request: HttpRequest, image_id) -> HttpResponse:
    """GET, or a POST without `confirm`: the confirmation page. A POST with confirm=yes deletes."""
    image = _get_image(request, image_id)
    if not permissions.can_delete_image(request.user, image):
        raise PermissionDenied("Only the image's creator or a team admin can delete it.")
    if request.method == "GET" or request.POST.get("confirm") != "yes":
        back = request.POST.get("next") or request.GET.get("next", "")
        context = {"image": image, "job": image.job, "next": back}
        return render(request, "generation/gallery_confirm_delete.html", context)
    services.image_delete(image=image)
    if request.htmx:
        return HttpResponse("")  # the tile swaps itself out
    messages.success(request, "Image deleted.")
    fallback = reverse("generation:gallery")
    target = _back_to(request, fallback)
    return redirect(fallback if str(image.pk) in target else target)
