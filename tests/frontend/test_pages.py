"""What the pages send the browser: the Content-Security-Policy, markup that needs no inline script or
style under it, one progress bar for page and websocket, the live quote's parameters, the local-mail hint.
(The browser tests in tests/e2e/test_browser.py check the same in Chromium.)"""

from __future__ import annotations

import re

import pytest
from django.template.loader import render_to_string
from django.test import override_settings
from django.urls import reverse

from generation import selectors
from generation.models import JobState
from tests.factories import submit_job

pytestmark = pytest.mark.django_db

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I)
STYLE_ATTRIBUTE = re.compile(r"<[^>]+\sstyle=", re.I)


def policy(response) -> dict[str, list[str]]:
    header = response.headers["Content-Security-Policy"]
    return {name: values for name, *values in (part.split() for part in header.split(";") if part.strip())}


@override_settings(ALLOWED_HOSTS=["studio.example"])
def test_every_page_has_a_policy_that_allows_only_this_site_and_its_websocket(client):
    response = client.get("/", HTTP_HOST="studio.example:8443")
    csp = policy(response)
    assert csp["script-src"] == ["'self'"] and csp["style-src"] == ["'self'"]
    assert csp["img-src"] == ["'self'", "data:"]  # live previews are data: URLs
    assert csp["frame-ancestors"] == ["'none'"] and csp["object-src"] == ["'none'"]
    # 'self' does not cover ws: in every browser: the page's own host is named, with its port.
    assert csp["connect-src"] == ["'self'", "ws://studio.example:8443", "wss://studio.example:8443"]
    assert "'unsafe-inline'" not in response.headers["Content-Security-Policy"]


@pytest.mark.parametrize("name", ["home", "account_login", "account_signup"])
def test_anonymous_pages_have_no_inline_script_or_style(client, name):
    html = client.get(reverse(name)).content.decode()
    assert not INLINE_SCRIPT.findall(html)
    assert not STYLE_ATTRIBUTE.findall(html)
    assert "js/theme.js" in html


def test_signed_in_pages_and_job_fragments_have_no_inline_script_or_style(client_with_credits):
    job = submit_job(client_with_credits.user, num_images=2)
    pages = [reverse("generation:create"), reverse("generation:job_list"), reverse("billing:credits"),
             reverse("generation:job_detail", args=[job.pk]), reverse("generation:job_panel", args=[job.pk])]
    for url in pages:
        html = client_with_credits.get(url).content.decode()
        assert not INLINE_SCRIPT.findall(html), url
        assert not STYLE_ATTRIBUTE.findall(html), url
    fragments = [
        render_to_string("generation/_job_oob.html", selectors.job_context(job)),
        render_to_string("generation/_progress_oob.html", {
            "job_id": job.pk, "step": 3, "total_steps": 20, "elapsed": 1.5, "eta": 8.5, "preview": "data:image/png;base64,AA"}),
    ]
    for html in fragments:
        assert not STYLE_ATTRIBUTE.findall(html)


def test_page_and_websocket_draw_the_same_progress_bar(client_with_credits):
    job = submit_job(client_with_credits.user)
    job.state, job.progress_step = JobState.RUNNING, 3
    job.save(update_fields=["state", "progress_step"])
    page = render_to_string("generation/_job_live.html", selectors.job_context(job))
    step = render_to_string("generation/_progress_oob.html", {
        "job_id": job.pk, "step": 3, "total_steps": job.steps, "elapsed": 1.0, "eta": None, "preview": None})

    def bar(html):
        return re.search(r'<div id="job-progress-[^"]+"[^>]*data-step="(\d+)"[^>]*>\s*(<progress[^>]*>)', html).groups()

    assert bar(page) == bar(step) == ("3", f'<progress class="progress" max="{job.steps}" value="3" aria-label="Progress">')
    assert 'hx-swap-oob="true"' in step


def test_a_finished_job_carries_its_card_for_the_recent_grid(client_with_credits):
    job = submit_job(client_with_credits.user)
    job.state = JobState.CANCELLED
    job.save(update_fields=["state"])
    html = render_to_string("generation/_job_oob.html", selectors.job_context(job))
    assert re.search(rf'<template data-recent-card>\s*<a class="recent-card" id="recent-job-{job.pk}"', html)
    create = client_with_credits.get(reverse("generation:create")).content.decode()
    assert 'id="recent-jobs"' in create  # the grid is there even when it is empty


def test_the_live_quote_sends_only_what_the_price_depends_on(client_with_credits):
    html = client_with_credits.get(reverse("generation:create")).content.decode()
    slot = re.search(r'<div id="cost-quote-slot"[^>]*>', html).group(0)
    assert 'hx-params="model,aspect,width,height,steps,num_images,save_to,bill_team"' in slot  # price and payer
    include = re.search(r'hx-include="([^"]*)"', slot).group(1)
    assert "prompt" not in include and include != "#create-form"


def test_the_cancel_form_swaps_only_the_job_head(client_with_credits):
    job = submit_job(client_with_credits.user)
    html = client_with_credits.get(reverse("generation:job_detail", args=[job.pk])).content.decode()
    form = re.search(r'<form[^>]*job_cancel|<form[^>]*/cancel/[^>]*>', html).group(0)
    assert f'hx-target="#job-head-{job.pk}"' in form and f'hx-select="#job-head-{job.pk}"' in form


@override_settings(EMAIL_BACKEND="studio.mail.ConsoleAndFileEmailBackend")
def test_verification_sent_page_says_where_the_local_mail_is(client):
    html = client.get(reverse("account_email_verification_sent")).content.decode()
    assert "data-local-mail" in html and "mail/</code>" in html and "console" in html


@override_settings(EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend")
def test_verification_sent_page_has_no_local_mail_hint_with_a_mail_server(client):
    html = client.get(reverse("account_email_verification_sent")).content.decode()
    assert "Verify Your Email Address" in html and "data-local-mail" not in html
