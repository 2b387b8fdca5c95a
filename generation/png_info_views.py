"""PNG info on Create: a PNG posted here fills the Create form from its generation parameters.

htmx (a file chosen or dropped on Create; static/js/png-info.js) gets the result fragment, whose
JSON script element the script applies to the form. A plain form post gets the Create page again,
the form prefilled. The file goes through the upload service (bytes, format and pixel checks); its
text chunks are read from the file as it was sent, since the re-encoded copy has none.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

from generation import selectors
from generation.forms import CreateForm, usable_loras
from generation.png_info import PngInfo, png_info_from_text
from generation.services.uploads import UploadRefused, upload_read_png_text
from generation.views import _remembered_destination

FILE_FIELD = "image"


@login_required
@require_POST
def png_info(request: HttpRequest) -> HttpResponse:
    info = selectors.model_info()
    result, error, status = None, "", 200
    upload = request.FILES.get(FILE_FIELD)
    if upload is None:
        error, status = "Choose a PNG file to read its parameters.", 400
    else:
        try:
            result = png_info_from_text(upload_read_png_text(data=upload), info, loras=usable_loras(request.user),
                                        models=list(selectors.models_offered(request.user)))
            info = result.model_info or info  # the picture's model, when it is one of ours
        except UploadRefused as refused:
            error, status = refused.message, refused.status
    context = {"png_info": result or PngInfo(), "png_info_error": error, "png_info_posted": True}
    if result is not None and result.found:
        context["png_info_values"] = result.form_values(info)
    if request.htmx:
        return render(request, "generation/_png_info.html#png-info-result", context, status=status)
    return render(request, "generation/create.html", {**context, **_create_page(request, info, result)}, status=status)


def _create_page(request: HttpRequest, info, result: PngInfo | None) -> dict:
    """The Create page's context, its form starting from the parameters found (the number of
    images and the destination stay as they were)."""
    teams = list(selectors.teams_user_can_save_into(request.user))
    initial = _remembered_destination(request)
    if result is not None:
        initial.update({key: value for key, value in result.form_values(info).items() if value is not None})
    form = CreateForm(initial=initial, model_info=info, teams=teams, user=request.user,
                      models=selectors.models_offered(request.user))
    if initial.get("save_to", "") not in form.teams:  # as the create view: a team I may no longer create in
        for key in ("save_to", "bill_team"):
            form.initial.pop(key, None)
    return {"form": form, "model_info": info, "recent_jobs": selectors.jobs_for_user(request.user)}
