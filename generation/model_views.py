"""Staff pages of the model registry: list, register, change, make default, repair."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from billing.pricing import model_price_multiplier
from generation import services
from generation.model_forms import ModelForm
from generation.models import Job, JobState, SDModel


@staff_member_required
@require_GET
def model_list(request: HttpRequest) -> HttpResponse:
    models = list(SDModel.objects.select_related("owner"))
    for model in models:
        model.price_multiplier = model_price_multiplier(model_name=model.name)
        model.queued = Job.objects.filter(model=model, state=JobState.QUEUED).count()
    return render(request, "generation/staff/models.html", {"models": models})


@staff_member_required
@require_http_methods(["GET", "POST"])
def model_register(request: HttpRequest) -> HttpResponse:
    form = ModelForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            model = services.model_register(name=form.cleaned_data["name"], is_default=form.cleaned_data["is_default"],
                                            **form.model_fields())
        except services.ModelNotUsable as error:
            form.add_error("path", str(error))
        else:
            if not form.cleaned_data["enabled"]:
                services.model_update(model=model, enabled=False)
            messages.success(request, f"Registered {model.title} ({model.family}, hash {model.hash}).")
            return redirect("generation:staff_models")
    status = 400 if request.method == "POST" else 200
    return render(request, "generation/staff/model_form.html", {"form": form, "model": None}, status=status)


@staff_member_required
@require_http_methods(["GET", "POST"])
def model_edit(request: HttpRequest, model_id: int) -> HttpResponse:
    model = get_object_or_404(SDModel, pk=model_id)
    initial = {field: getattr(model, field) for field in (
        "name", "title", "description", "path", "default_steps", "default_guidance_scale", "default_sampler",
        "default_width", "default_height", "enabled", "is_default")}
    initial["price_multiplier"] = model_price_multiplier(model_name=model.name)
    form = ModelForm(request.POST or None, initial=initial, instance=model)
    if request.method == "POST" and form.is_valid():
        fields = form.model_fields()
        if model.is_default and not form.cleaned_data["enabled"]:
            form.add_error("enabled", "Make another model the default first.")
        else:
            try:
                services.model_update(model=model, enabled=form.cleaned_data["enabled"],
                                      reread="reread" in request.POST, **fields)
                if form.cleaned_data["is_default"] and not model.is_default:
                    services.model_make_default(model=model)
            except services.ModelNotUsable as error:
                form.add_error("path", str(error))
            else:
                messages.success(request, f"Saved {model.title}.")
                return redirect("generation:staff_models")
    status = 400 if request.method == "POST" else 200
    return render(request, "generation/staff/model_form.html", {"form": form, "model": model}, status=status)


@staff_member_required
@require_POST
def model_repair(request: HttpRequest, model_id: int) -> HttpResponse:
    model = get_object_or_404(SDModel, pk=model_id)
    try:
        services.model_repair(model=model)
    except services.ModelNotUsable as error:
        messages.error(request, f"{model.title} is still unreadable: {error}")
        return redirect("generation:staff_models")
    messages.success(request, f"{model.title} is offered again (hash {model.hash}).")
    return redirect("generation:staff_models")
