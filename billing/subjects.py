"""Subjects: what a hold or a refund is for, named by whoever spends (`<kind>:<id>`, e.g. `job:<uuid>`).

Billing knows no spender. The composition root (studio/settings.py) tells it, per kind, which
page shows a subject and which function says whether a subject may still hold credits:

    BILLING_SUBJECTS = {"job": {"url_name": "generation:job_detail",
                                "live_ids": "generation.billing_subjects.live_job_ids"}}

`live_ids(ids: list[str]) -> set[str]` returns the ids that are still allowed an open hold (a job
that is queued or running); `manage.py billing_check` reports every other open hold.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from django.conf import settings
from django.urls import NoReverseMatch, reverse
from django.utils.module_loading import import_string

SUBJECT_RE = re.compile(r"[a-z][a-z0-9_]{0,31}:[A-Za-z0-9_.-]{1,160}\Z")


class InvalidSubject(ValueError):
    pass


def subject_check(subject: str) -> str:
    """The subject if well formed (`<kind>:<id>`); InvalidSubject otherwise."""
    if not isinstance(subject, str) or not SUBJECT_RE.match(subject):
        raise InvalidSubject(f"Not a subject (expected kind:id, e.g. job:<id>): {str(subject)[:80]!r}")
    return subject


def subject_split(subject: str) -> tuple[str, str]:
    kind, _, ident = subject.partition(":")
    return kind, ident


def _config(kind: str) -> dict:
    return getattr(settings, "BILLING_SUBJECTS", {}).get(kind, {})


def subject_url(subject: str) -> str | None:
    """The page of a subject, if its kind names one and the id fits it."""
    kind, ident = subject_split(subject)
    url_name = _config(kind).get("url_name")
    if not url_name or not ident:
        return None
    try:
        return reverse(url_name, args=[ident])
    except NoReverseMatch:
        return None


def subject_live_ids_function(kind: str) -> Callable[[list[str]], set[str]] | None:
    path = _config(kind).get("live_ids")
    return import_string(path) if path else None
