"""The LoRA library's pages (docs/fine-tuning.md, "Pages"): mine and my teams' LoRAs, import,
download, rename, share with a team, stop sharing, delete.

A LoRA the user may not see is a 404 (LoRA.objects.visible_to); one they see but may not change
is a 403 with the reason (generation.permissions). Refusals of the services are form errors with
their status; nothing half-done.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from generation import permissions, selectors, services, serving, training_selectors
from generation.models import LoRA
from generation.services.loras import LoraRefused
from generation.training_forms import LoraImportForm, LoraRenameForm, LoraShareForm


def _get_lora(request: HttpRequest, lora_id) -> LoRA:
    try:
        return training_selectors.lora_for_user(request.user, lora_id)
    except LoRA.DoesNotExist:
        raise Http404("No such LoRA.") from None


def _list_page(request: HttpRequest, *, import_form: LoraImportForm | None = None,
               status: int = 200) -> HttpResponse:
    loras = list(training_selectors.loras_for_user(request.user))
    for lora in loras:
        lora.mine = lora.owner_id == request.user.pk
        lora.may_download = permissions.can_download_lora(request.user, lora)
    context = {
        "mine": [lora for lora in loras if lora.mine], "shared": [lora for lora in loras if not lora.mine],
        "import_form": import_form or LoraImportForm(), "tab": "loras", "model_info": selectors.model_info(),
    }
    return render(request, "generation/loras.html", context, status=status)


@login_required
@require_GET
def loras(request: HttpRequest) -> HttpResponse:
    return _list_page(request)


@login_required
@require_http_methods(["GET", "POST"])
def lora_import(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return _list_page(request)
    form = LoraImportForm(request.POST, request.FILES)
    if not form.is_valid():
        return _list_page(request, import_form=form, status=400)
    upload = form.cleaned_data["lora_file"]
    try:
        lora = services.lora_import(user=request.user, name=form.cleaned_data["name"], data=_read(upload),
                                    filename=upload.name, description=form.cleaned_data["description"])
    except LoraRefused as refused:
        form.add_error(_field(refused, form, {"file": "lora_file"}), refused.message)
        return _list_page(request, import_form=form, status=refused.status)
    messages.success(request, f"Imported {lora.name}.")
    return redirect("generation:lora_detail", lora_id=lora.pk)


def _read(upload) -> bytes:
    """The upload handler already cut it one byte past STUDIO_LORA_MAX_BYTES; the service refuses it."""
    upload.seek(0)
    return upload.read()


def _field(refused: LoraRefused, form, aliases: dict | None = None) -> str | None:
    field = (aliases or {}).get(refused.field, refused.field)
    return field if field in form.fields else None


def _detail_page(request: HttpRequest, lora: LoRA, *, rename_form=None, share_form=None, error: str = "",
                 status: int = 200) -> HttpResponse:
    user = request.user
    teams = list(selectors.teams_user_can_save_into(user)) if permissions.can_change_lora(user, lora) else []
    context = {
        "lora": lora, "tab": "loras", "made_by": training_selectors.lora_made_by(lora),
        "may": {
            "download": permissions.can_download_lora(user, lora),
            "change": permissions.can_change_lora(user, lora),
            "unshare": permissions.can_remove_lora_from_team(user, lora),
            "use": permissions.can_use_lora(user, lora),
        },
        "rename_form": rename_form or LoraRenameForm(initial={"name": lora.name, "description": lora.description}),
        "share_form": share_form or LoraShareForm(teams=teams, initial={
            "team": str(lora.team_id) if lora.team_id else "", "allow_download": lora.team_may_download}),
        "teams": teams, "error": error,
    }
    return render(request, "generation/lora_detail.html", context, status=status)


@login_required
@require_GET
def lora_detail(request: HttpRequest, lora_id) -> HttpResponse:
    return _detail_page(request, _get_lora(request, lora_id))


@login_required
@require_GET
def lora_download(request: HttpRequest, lora_id) -> HttpResponse:
    lora = _get_lora(request, lora_id)
    if not permissions.can_download_lora(request.user, lora):
        raise PermissionDenied("The owner of this LoRA has not allowed downloads.")
    return serving.serve_file(lora.file.name, "application/octet-stream", download_name=f"{lora.name}.safetensors")


@login_required
@require_POST
def lora_rename(request: HttpRequest, lora_id) -> HttpResponse:
    lora = _get_lora(request, lora_id)
    if not permissions.can_change_lora(request.user, lora):
        raise PermissionDenied("Only its owner can rename a LoRA.")
    form = LoraRenameForm(request.POST)
    if not form.is_valid():
        return _detail_page(request, lora, rename_form=form, status=400)
    try:
        services.lora_rename(user=request.user, lora=lora, name=form.cleaned_data["name"],
                             description=form.cleaned_data["description"])
    except LoraRefused as refused:
        form.add_error(_field(refused, form), refused.message)
        return _detail_page(request, lora, rename_form=form, status=refused.status)
    messages.success(request, "Saved.")
    return redirect("generation:lora_detail", lora_id=lora.pk)


@login_required
@require_POST
def lora_share(request: HttpRequest, lora_id) -> HttpResponse:
    lora = _get_lora(request, lora_id)
    if not permissions.can_change_lora(request.user, lora):
        raise PermissionDenied("Only its owner can share a LoRA.")
    form = LoraShareForm(request.POST, teams=list(selectors.teams_user_can_save_into(request.user)))
    if not form.is_valid():
        return _detail_page(request, lora, share_form=form, status=400)
    try:
        lora = services.lora_share_with_team(user=request.user, lora=lora, team_id=form.cleaned_data["team"],
                                             allow_download=form.cleaned_data["allow_download"])
    except LoraRefused as refused:
        form.add_error(_field(refused, form), refused.message)
        return _detail_page(request, lora, share_form=form, status=refused.status)
    messages.success(request, f"Shared with {lora.team.name}.")
    return redirect("generation:lora_detail", lora_id=lora.pk)


@login_required
@require_POST
def lora_unshare(request: HttpRequest, lora_id) -> HttpResponse:
    lora = _get_lora(request, lora_id)
    if not permissions.can_remove_lora_from_team(request.user, lora):
        raise PermissionDenied("Only its owner or a team admin can stop sharing this LoRA.")
    services.lora_unshare(user=request.user, lora=lora)
    messages.success(request, "No longer shared.")
    if lora.owner_id != request.user.pk:  # a team admin took it out: it is no longer theirs to see
        return redirect("generation:loras")
    return redirect("generation:lora_detail", lora_id=lora.pk)


@login_required
@require_http_methods(["GET", "POST"])
def lora_delete(request: HttpRequest, lora_id) -> HttpResponse:
    """GET, or a POST without confirm=yes: the confirmation page. A POST with it deletes."""
    lora = _get_lora(request, lora_id)
    if not permissions.can_change_lora(request.user, lora):
        raise PermissionDenied("Only its owner can delete a LoRA.")
    if request.method == "GET" or request.POST.get("confirm") != "yes":
        return render(request, "generation/lora_confirm_delete.html", {"lora": lora, "tab": "loras"})
    try:
        services.lora_delete(user=request.user, lora=lora)
    except LoraRefused as refused:
        return render(request, "generation/lora_confirm_delete.html",
                      {"lora": lora, "tab": "loras", "error": refused.message}, status=refused.status)
    messages.success(request, f"Deleted {lora.name}.")
    return redirect("generation:loras")
