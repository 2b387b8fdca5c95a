"""The staff review queue of reported public links. Staff only: anyone else gets a 404, as if
these pages did not exist. Every action goes through generation.services.moderation, which
records it (ModerationAction)."""

from __future__ import annotations

from functools import wraps

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from generation import permissions, serving, share_selectors
from generation.models import Image, ModerationAction, Report
from generation.services import moderation
from generation.share_forms import ModerationForm

HISTORY_LIMIT = 200
QUEUE_LIMIT = 100


def staff_only(view):
    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not permissions.can_moderate_reports(request.user):
            raise Http404("No such page.")
        return view(request, *args, **kwargs)
    return wrapped


def _with_link_state(report: Report) -> Report:
    report.link_state = report.share_link and share_selectors.share_link_state(report.share_link)
    return report


def _report(report_id) -> Report:
    report = share_selectors.reports_all().filter(pk=report_id).first()
    if report is None:
        raise Http404("No such report.")
    return _with_link_state(report)


@staff_only
@require_GET
def report_queue(request: HttpRequest) -> HttpResponse:
    reports = [_with_link_state(report) for report in share_selectors.reports_open()[:QUEUE_LIMIT]]
    return render(request, "generation/staff/reports.html",
                  {"reports": reports, "open_count": share_selectors.reports_open_count()})


@staff_only
@require_http_methods(["GET", "POST"])
def report_detail(request: HttpRequest, report_id) -> HttpResponse:
    report = _report(report_id)
    images = list(share_selectors.report_images_for_staff(report)[:60])
    form = ModerationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            action = _act(request, report, form.cleaned_data)
        except moderation.ModerationRefused as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, action.summary)
            return redirect("generation:staff_reports")
    status = 400 if request.method == "POST" else 200
    actions = report.actions.select_related("staff")
    context = {"report": report, "images": images, "form": form, "actions": actions}
    return render(request, "generation/staff/report_detail.html", context, status=status)


def _act(request: HttpRequest, report: Report, data: dict) -> ModerationAction:
    staff, note, action = request.user, data["note"], data["action"]
    if action == "dismiss":
        return moderation.report_dismiss(report=report, staff=staff, note=note)
    if action == "hide_link":
        return moderation.report_hide_link(report=report, staff=staff, note=note)
    if action == "suspend_account":
        return moderation.report_suspend_account(report=report, staff=staff, note=note)
    image = share_selectors.report_images_for_staff(report).filter(pk=data["image"]).first()
    if image is None:
        raise moderation.ModerationRefused("That image is not part of the reported link.")
    return moderation.report_delete_image(report=report, staff=staff, image=image, note=note)


def _reported_image(report_id, image_id) -> Image:
    image = share_selectors.report_images_for_staff(_report(report_id)).filter(pk=image_id).first()
    if image is None:
        raise Http404("No such image in this report.")
    return image


@staff_only
@require_GET
def report_image_file(request: HttpRequest, report_id, image_id) -> HttpResponse:
    """Staff see what was reported even once the link is hidden or revoked: same serving function."""
    return serving.image_original(_reported_image(report_id, image_id), cache_control="private, no-store")


@staff_only
@require_GET
def report_image_thumbnail(request: HttpRequest, report_id, image_id) -> HttpResponse:
    return serving.image_thumbnail(_reported_image(report_id, image_id), cache_control="private, no-store")


@staff_only
@require_GET
def moderation_history(request: HttpRequest) -> HttpResponse:
    actions = ModerationAction.objects.select_related("staff", "target_user", "report")[:HISTORY_LIMIT]
    return render(request, "generation/staff/history.html", {"actions": actions})
