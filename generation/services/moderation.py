"""Reports of public links and what staff do about them. Every staff action is one
ModerationAction row (append-only), written in the same transaction as the action itself."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from generation import events, permissions
from generation.models import (
    Image,
    Job,
    JobState,
    ModerationAction,
    ModerationActionKind,
    Report,
    ShareLink,
)
from generation.services.images import image_delete
from generation.services.jobs import job_cancel
from generation.services.sharing import share_links_revoke_all_of


class ModerationRefused(Exception):
    """Not staff, or an action that cannot apply to this report; the message is fit to show."""


def report_create(*, link: ShareLink, reason: str, details: str = "", reporter=None,
                  address: str | None = None) -> Report:
    """Anyone viewing a live link (signed in or not) says it should not be there."""
    reporter = reporter if getattr(reporter, "is_authenticated", False) else None
    return Report.objects.create(
        share_link=link, link_owner_id=link.created_by_id, reason=reason, details=details.strip(),
        reporter=reporter, reporter_address=address or None,
    )


def _check_staff(staff) -> None:
    if not permissions.can_moderate_reports(staff):
        raise ModerationRefused("Only staff review reports.")


def _open(report: Report) -> Report:
    """The report, locked; refuses one that another staff member closed meanwhile."""
    locked = Report.objects.select_for_update().filter(pk=report.pk).first()
    if locked is None or locked.resolved_at is not None:
        raise ModerationRefused("This report was already dealt with.")
    return locked


def _link_words(link: ShareLink | None) -> str:
    if link is None:
        return "a link that no longer exists"
    if link.image_id:
        return f"link {link.token[:8]}… to image {link.image_id} (prompt: {link.image.job.prompt[:120]!r})"
    return f"link {link.token[:8]}… to collection {link.collection.name!r} ({link.collection_id})"


def _record(*, report: Report, kind: str, staff, summary: str, note: str, target_user=None,
            also_close=None) -> ModerationAction:
    """Close the report (and `also_close`, open reports the same action settles) and write the row."""
    now = timezone.now()
    closed = 0
    if also_close is not None:
        closed = also_close.filter(resolved_at__isnull=True).exclude(pk=report.pk).update(resolved_at=now)
    Report.objects.filter(pk=report.pk).update(resolved_at=now)
    report.resolved_at = now
    if closed:
        summary += f"; closed {closed} other open report{'s' if closed > 1 else ''} of it"
    return ModerationAction.objects.create(
        report=report, kind=kind, staff=staff, target_user=target_user or report.link_owner,
        summary=summary[:500], note=note.strip(),
    )


@transaction.atomic
def report_dismiss(*, report: Report, staff, note: str = "") -> ModerationAction:
    """Nothing wrong: the report closes, the link stays."""
    _check_staff(staff)
    report = _open(report)
    summary = f"Dismissed a {report.get_reason_display().lower()} report of {_link_words(report.share_link)}"
    return _record(report=report, kind=ModerationActionKind.DISMISS, staff=staff, summary=summary, note=note)


@transaction.atomic
def report_hide_link(*, report: Report, staff, note: str = "") -> ModerationAction:
    """The link answers 404 from now on (its maker cannot bring it back; they may make a new one)."""
    _check_staff(staff)
    report = _open(report)
    link = report.share_link
    if link is None:
        raise ModerationRefused("The link is already gone.")
    ShareLink.objects.filter(pk=link.pk, hidden_at__isnull=True).update(hidden_at=timezone.now())
    return _record(report=report, kind=ModerationActionKind.HIDE_LINK, staff=staff,
                   summary=f"Hid {_link_words(link)}", note=note,
                   also_close=Report.objects.filter(share_link=link))


@transaction.atomic
def report_delete_image(*, report: Report, staff, image: Image, note: str = "") -> ModerationAction:
    """Delete one image the reported link shows (the image, or one of the collection's): its row
    now, its files after commit, every link to it with it. Credits are not touched."""
    _check_staff(staff)
    report = _open(report)
    link = report.share_link
    shown = link is not None and (
        link.image_id == image.pk or image.collection_items.filter(collection_id=link.collection_id).exists()
    )
    if not shown:
        raise ModerationRefused("That image is not part of the reported link.")
    summary = (f"Deleted image {image.pk} by {image.owner.email} (prompt: {image.job.prompt[:120]!r}), "
               f"reported through {_link_words(link)}")
    # Close the reports of every link that dies with the image before the cascade forgets them.
    settled = Report.objects.filter(share_link__image=image)
    action = _record(report=report, kind=ModerationActionKind.DELETE_IMAGE, staff=staff, summary=summary,
                     note=note, target_user=image.owner, also_close=settled)
    image_delete(image=image)
    return action


@transaction.atomic
def report_suspend_account(*, report: Report, staff, note: str = "") -> ModerationAction:
    """Suspend the link's maker: they cannot sign in (is_active=False), their queued and running
    jobs are cancelled (credits of queued ones released at once; running ones stop at their next
    step and release theirs), every link they made is revoked, their open sockets close."""
    _check_staff(staff)
    report = _open(report)
    user = report.link_owner
    if user is None:
        raise ModerationRefused("The account that made this link no longer exists.")
    if user.pk == staff.pk or user.is_superuser:
        raise ModerationRefused("Staff cannot suspend themselves or a superuser here.")
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)
    user.is_active = False
    active = Job.objects.filter(user=user, state__in=[JobState.QUEUED, JobState.RUNNING]).order_by("pk")
    cancelled = [job_cancel(job=job) for job in active]
    revoked = share_links_revoke_all_of(user=user)
    events.access_changed(user_id=user.pk)
    summary = (f"Suspended {user.email}: cancelled {len(cancelled)} job{'s' if len(cancelled) != 1 else ''}, "
               f"revoked {revoked} link{'s' if revoked != 1 else ''}; "
               f"reported: {_link_words(report.share_link)}")
    return _record(report=report, kind=ModerationActionKind.SUSPEND_ACCOUNT, staff=staff, summary=summary,
                   note=note, target_user=user, also_close=Report.objects.filter(link_owner=user))
