"""Reports of public links (anonymous or signed in, rate-limited per address) and the staff review
queue: staff only (404 for anyone else), each action does what it says and leaves one audit row."""

from __future__ import annotations

import pytest
from django.core.files.storage import default_storage
from django.test import Client, override_settings
from django.urls import reverse

from billing.selectors import wallet_balance
from generation import events, services
from generation.models import (
    Image,
    JobState,
    ModerationAction,
    ModerationActionKind,
    Report,
    ReportReason,
    ShareLink,
)
from generation.services import moderation, sharing
from tests.factories import make_user, submit_job
from tests.generation.sharing_support import make_collection, make_image

pytestmark = [pytest.mark.django_db]

QUEUE = reverse("generation:staff_reports")
HISTORY = reverse("generation:staff_moderation_history")


def report_url(link: ShareLink) -> str:
    return reverse("generation:share_report", args=[link.token])


def page_url(link: ShareLink) -> str:
    return reverse("generation:share", args=[link.token])


def detail_url(report: Report) -> str:
    return reverse("generation:staff_report", args=[report.pk])


@pytest.fixture
def owner():
    return make_user(credits=100)


@pytest.fixture
def link(owner) -> ShareLink:
    return sharing.share_link_create(user=owner, image=make_image(owner))


@pytest.fixture
def staff():
    client = Client()
    client.user = make_user(staff=True)
    client.force_login(client.user)
    return client


def make_report(link: ShareLink, reason: str = ReportReason.SPAM, details: str = "buy my pills") -> Report:
    return moderation.report_create(link=link, reason=reason, details=details, address="203.0.113.9")


# --- Reporting ------------------------------------------------------------------------------------------

def test_anyone_viewing_a_link_can_report_it_anonymously(link):
    anonymous = Client()
    assert f'href="{report_url(link)}"' in anonymous.get(page_url(link)).content.decode()
    form = anonymous.get(report_url(link))
    assert form.status_code == 200 and form["X-Robots-Tag"] == "noindex, nofollow"
    for value, label in ReportReason.choices:
        assert f'value="{value}"' in form.content.decode() and label in form.content.decode()

    response = anonymous.post(report_url(link), {"reason": "harassment", "details": "  targets a person  "})
    thanks = reverse("generation:share_report_done", args=[link.token])
    assert response.status_code == 302 and response["Location"] == thanks
    report = Report.objects.get()
    assert (report.share_link, report.link_owner, report.reason) == (link, link.created_by, "harassment")
    assert report.details == "targets a person" and report.reporter is None
    assert report.reporter_address == "127.0.0.1" and report.resolved_at is None
    page = anonymous.get(thanks)
    assert page.status_code == 200 and "Thank you for your report" in page.content.decode()


def test_a_signed_in_reporter_is_recorded(link):
    reporter = make_user()
    client = Client()
    client.force_login(reporter)
    client.post(report_url(link), {"reason": "spam"})
    assert Report.objects.get().reporter == reporter


@pytest.mark.database
def test_a_bad_report_is_a_400_with_its_message_and_saves_nothing(link):
    response = Client().post(report_url(link), {"reason": "dislike", "details": "x" * 2001})
    assert response.status_code == 400
    html = response.content.decode()
    assert "Select a valid choice" in html and "at most 2000 characters" in html
    assert not Report.objects.exists()


def test_a_dead_link_cannot_be_reported(link):
    sharing.share_link_revoke(user=link.created_by, link=link)
    assert Client().post(report_url(link), {"reason": "spam"}).status_code == 404
    assert not Report.objects.exists()


@pytest.mark.database
@override_settings(ACCOUNT_RATE_LIMITS={"share_report": "3/h/ip"})
def test_reports_are_rate_limited_per_address(link):
    first = Client(REMOTE_ADDR="198.51.100.7")
    for _ in range(3):
        assert first.post(report_url(link), {"reason": "spam"}).status_code == 302
    refused = first.post(report_url(link), {"reason": "spam"})
    assert refused.status_code == 429
    assert "several reports in a short time" in refused.content.decode()
    assert Report.objects.count() == 3
    other = Client(REMOTE_ADDR="198.51.100.8")  # another address still may
    assert other.post(report_url(link), {"reason": "spam"}).status_code == 302
    assert Report.objects.count() == 4


def test_the_default_rate_is_set_and_invalid_posts_do_not_count(link):
    from django.conf import settings

    assert settings.ACCOUNT_RATE_LIMITS["share_report"] == "5/h/ip"
    client = Client(REMOTE_ADDR="198.51.100.9")
    for _ in range(6):
        assert client.post(report_url(link), {"reason": "nonsense"}).status_code == 400
    for _ in range(5):
        assert client.post(report_url(link), {"reason": "spam"}).status_code == 302
    assert client.post(report_url(link), {"reason": "spam"}).status_code == 429


# --- Who sees the queue ---------------------------------------------------------------------------------

@pytest.mark.parametrize("who", ["anonymous", "user", "inactive staff"])
def test_the_queue_and_its_pages_are_404_for_anyone_but_staff(who, link):
    report = make_report(link)
    client = Client()
    if who != "anonymous":
        user = make_user(staff=who == "inactive staff")
        if who == "inactive staff":
            user.is_active = False
            user.save()
        client.force_login(user)
    urls = [QUEUE, HISTORY, detail_url(report),
            reverse("generation:staff_report_image_file", args=[report.pk, link.image_id]),
            reverse("generation:staff_report_image_thumbnail", args=[report.pk, link.image_id])]
    for url in urls:
        assert client.get(url).status_code == 404, url
    assert client.post(detail_url(report), {"action": "hide_link"}).status_code == 404
    link.refresh_from_db()
    assert link.hidden_at is None and not ModerationAction.objects.exists()


def test_the_nav_shows_reports_with_the_open_count_to_staff_only(staff, link):
    make_report(link)
    make_report(link)
    html = staff.get(reverse("generation:gallery")).content.decode()
    assert f'href="{QUEUE}"' in html and 'data-open-reports>2<' in html
    client = Client()
    client.force_login(link.created_by)
    assert f'href="{QUEUE}"' not in client.get(reverse("generation:gallery")).content.decode()


def test_the_queue_lists_open_reports_with_their_content(staff, link):
    open_report, closed = make_report(link), make_report(link, details="old one")
    moderation.report_dismiss(report=closed, staff=staff.user)
    html = staff.get(QUEUE).content.decode()
    assert f'data-report-row="{open_report.pk}"' in html and f'data-report-row="{closed.pk}"' not in html
    assert reverse("generation:staff_report_image_thumbnail", args=[open_report.pk, link.image_id]) in html
    assert "buy my pills" in html and link.created_by.email in html


def test_the_queue_runs_a_constant_number_of_queries(staff, owner, django_assert_max_num_queries):
    for _ in range(3):
        make_report(sharing.share_link_create(user=owner, image=make_image(owner)))
    with django_assert_max_num_queries(12) as few:
        staff.get(QUEUE)
    for _ in range(12):
        make_report(sharing.share_link_create(user=owner, image=make_image(owner)))
    with django_assert_max_num_queries(len(few.captured_queries)):
        staff.get(QUEUE)


def test_staff_see_the_reported_image_and_its_prompt_even_once_the_link_is_hidden(staff, link):
    report = make_report(link)
    moderation.report_hide_link(report=report, staff=staff.user)
    assert Client().get(page_url(link)).status_code == 404
    html = staff.get(detail_url(report)).content.decode()
    assert "Hidden by staff" in html and "a lighthouse in a storm" in html
    for kind in ("file", "thumbnail"):
        response = staff.get(reverse(f"generation:staff_report_image_{kind}", args=[report.pk, link.image_id]))
        assert response.status_code == 200 and response["X-Content-Type-Options"] == "nosniff"
    unrelated = make_image(make_user())
    url = reverse("generation:staff_report_image_file", args=[report.pk, unrelated.pk])
    assert staff.get(url).status_code == 404  # only what the report points at


# --- The actions, each with its audit row ------------------------------------------------------------

def act(staff, report, **data):
    return staff.post(detail_url(report), data)


def only_action() -> ModerationAction:
    [action] = ModerationAction.objects.all()
    return action


def test_dismiss_closes_the_report_and_keeps_the_link(staff, link):
    report = make_report(link)
    other = make_report(link)
    response = act(staff, report, action="dismiss", note="satire, allowed")
    assert response.status_code == 302 and response["Location"] == QUEUE
    report.refresh_from_db()
    other.refresh_from_db()
    assert report.resolved_at is not None and other.resolved_at is None  # each report is judged alone
    assert Client().get(page_url(link)).status_code == 200
    action = only_action()
    assert (action.kind, action.staff, action.report, action.target_user) == (
        ModerationActionKind.DISMISS, staff.user, report, link.created_by)
    assert action.note == "satire, allowed" and "Dismissed a spam or scam report" in action.summary


def test_hide_link_makes_it_404_and_closes_every_open_report_of_it(staff, link):
    report, second = make_report(link), make_report(link)
    act(staff, report, action="hide_link", note="spam")
    link.refresh_from_db()
    second.refresh_from_db()
    assert link.hidden_at is not None and link.revoked_at is None
    assert second.resolved_at is not None
    assert Client().get(page_url(link)).status_code == 404
    action = only_action()
    assert action.kind == ModerationActionKind.HIDE_LINK and action.note == "spam"
    assert f"Hid link {link.token[:8]}" in action.summary and "closed 1 other open report" in action.summary


def test_delete_image_deletes_it_and_its_files_and_leaves_credits_alone(staff, link, owner,
                                                                         django_capture_on_commit_callbacks):
    report = make_report(link)
    image = link.image
    files = [image.file.name, image.thumbnail.name]
    balance = wallet_balance(user=owner)
    with django_capture_on_commit_callbacks(execute=True):
        response = act(staff, report, action="delete_image", image=str(image.pk), note="illegal")
    assert response.status_code == 302
    assert not Image.objects.filter(pk=image.pk).exists()
    assert not any(default_storage.exists(name) for name in files)
    assert not ShareLink.objects.filter(pk=link.pk).exists()
    assert Client().get(page_url(link)).status_code == 404
    report.refresh_from_db()
    assert report.resolved_at is not None and report.share_link is None  # the record outlives the link
    assert wallet_balance(user=owner) == balance
    action = only_action()
    assert action.kind == ModerationActionKind.DELETE_IMAGE and action.target_user == owner
    assert str(image.pk) in action.summary and "a lighthouse in a storm" in action.summary


def test_delete_image_of_a_collection_link_takes_one_image_of_it(staff, owner):
    keep, remove = make_image(owner, prompt="keep"), make_image(owner, prompt="remove")
    link = sharing.share_link_create(user=owner, collection=make_collection(user=owner, images=[keep, remove]))
    report = make_report(link)
    html = staff.get(detail_url(report)).content.decode()
    assert f'data-report-image="{keep.pk}"' in html and f'data-report-image="{remove.pk}"' in html
    act(staff, report, action="delete_image", image=str(remove.pk))
    assert list(Image.objects.values_list("pk", flat=True)) == [keep.pk]
    html = Client().get(page_url(link)).content.decode()
    assert html.count("data-share-tile") == 1


def test_delete_image_refuses_an_image_outside_the_report(staff, link):
    report = make_report(link)
    unrelated = make_image(make_user())
    response = act(staff, report, action="delete_image", image=str(unrelated.pk))
    assert response.status_code == 400 and "not part of the reported link" in response.content.decode()
    missing = act(staff, report, action="delete_image")
    assert missing.status_code == 400 and "Say which image to delete" in missing.content.decode()
    assert Image.objects.filter(pk=unrelated.pk).exists() and not ModerationAction.objects.exists()


def test_suspend_blocks_the_account_cancels_its_jobs_and_revokes_its_links(staff, owner, link,
                                                                          django_capture_on_commit_callbacks):
    other_link = sharing.share_link_create(user=owner, image=make_image(owner))
    report = make_report(link)
    running = submit_job(owner)
    assert services.job_claim_next(worker_id="test-worker").job_id == running.pk
    queued = submit_job(owner, seed=7)
    assert wallet_balance(user=owner)[1] > 0  # credits on hold for both
    with events.capture_events() as sent, django_capture_on_commit_callbacks(execute=True):
        response = act(staff, report, action="suspend_account", note="repeat offender")
    assert response.status_code == 302

    owner.refresh_from_db()
    assert owner.is_active is False
    queued.refresh_from_db()
    running.refresh_from_db()
    assert queued.state == JobState.CANCELLED
    assert running.state == JobState.RUNNING and running.cancel_requested  # stops at its next step
    assert ShareLink.objects.filter(created_by=owner, revoked_at__isnull=True).count() == 0
    for shared in (link, other_link):
        assert Client().get(page_url(shared)).status_code == 404
    assert (events.user_group(owner.pk), {"type": "access.changed"}) in sent
    action = only_action()
    assert (action.kind, action.target_user, action.note) == (
        ModerationActionKind.SUSPEND_ACCOUNT, owner, "repeat offender")
    assert "cancelled 2 jobs" in action.summary and "revoked 2 links" in action.summary
    signed_in = Client()
    signed_in.force_login(owner)
    assert signed_in.get(reverse("generation:gallery")).status_code == 302  # back to the login page


def test_suspend_closes_every_open_report_of_that_account(staff, owner, link):
    report = make_report(link)
    elsewhere = make_report(sharing.share_link_create(user=owner, image=make_image(owner)))
    stranger = make_user()
    someone_else = make_report(sharing.share_link_create(user=stranger, image=make_image(stranger)))
    act(staff, report, action="suspend_account")
    elsewhere.refresh_from_db()
    someone_else.refresh_from_db()
    assert elsewhere.resolved_at is not None and someone_else.resolved_at is None


def test_staff_cannot_suspend_themselves_or_a_superuser(staff):
    own = make_report(sharing.share_link_create(user=staff.user, image=make_image(staff.user)))
    response = act(staff, own, action="suspend_account")
    assert response.status_code == 400 and "cannot suspend themselves" in response.content.decode()
    staff.user.refresh_from_db()
    assert staff.user.is_active and not ModerationAction.objects.exists()
    root = make_user(staff=True)
    root.is_superuser = True
    root.save(update_fields=["is_superuser"])
    theirs = make_report(sharing.share_link_create(user=root, image=make_image(root)))
    assert act(staff, theirs, action="suspend_account").status_code == 400
    root.refresh_from_db()
    assert root.is_active and not ModerationAction.objects.exists()


@pytest.mark.database
def test_a_report_is_acted_on_once(staff, link):
    report = make_report(link)
    act(staff, report, action="dismiss")
    response = act(staff, report, action="hide_link")
    assert response.status_code == 400 and "already dealt with" in response.content.decode()
    link.refresh_from_db()
    assert link.hidden_at is None and ModerationAction.objects.count() == 1


@pytest.mark.database
def test_a_bad_action_is_a_400(staff, link):
    report = make_report(link)
    assert act(staff, report, action="ban_forever").status_code == 400
    assert not ModerationAction.objects.exists()


def test_services_refuse_non_staff(link):
    report = make_report(link)
    with pytest.raises(moderation.ModerationRefused):
        moderation.report_hide_link(report=report, staff=make_user())
    link.refresh_from_db()
    assert link.hidden_at is None


def test_the_history_lists_every_action_newest_first(staff, link, owner):
    first = make_report(link)
    moderation.report_dismiss(report=first, staff=staff.user, note="fine")
    second = make_report(link)
    moderation.report_hide_link(report=second, staff=staff.user, note="not fine")
    html = staff.get(HISTORY).content.decode()
    assert html.index('data-moderation-action="hide_link"') < html.index('data-moderation-action="dismiss"')
    assert "not fine" in html and staff.user.email in html and owner.email in html


def test_the_report_form_passes_the_csrf_check_without_an_account(link):
    """The public page keeps its Referer same-origin: a browser then sends its real Origin with the
    form (with no-referrer it sends `Origin: null`, which the CSRF check refuses)."""
    browser = Client(enforce_csrf_checks=True)
    form = browser.get(report_url(link))
    assert form["Referrer-Policy"] == "same-origin"
    token = browser.cookies["csrftoken"].value
    response = browser.post(report_url(link), {"reason": "spam", "csrfmiddlewaretoken": token},
                            HTTP_ORIGIN="http://testserver")
    assert response.status_code == 302 and Report.objects.count() == 1
