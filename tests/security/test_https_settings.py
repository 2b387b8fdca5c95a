"""HTTPS deployment: what an https site URL and a TLS-terminating proxy turn on.

Settings come from the environment at import, so each case runs in a fresh process.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap

import pytest

from studio.settings import BASE_DIR

HTTPS_SITE = {
    "STUDIO_SITE_URL": "https://studio.example.com",
    "STUDIO_ALLOWED_HOSTS": "studio.example.com",
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
}


def run_with(env: dict[str, str], args: list[str], tmp_path) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("STUDIO_", "DJANGO_"))}
    clean |= {"STUDIO_VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "studio.settings",
              "STUDIO_MODEL_PATH": os.environ["STUDIO_MODEL_PATH"], **env}
    return subprocess.run([sys.executable, *args], env=clean, cwd=BASE_DIR, capture_output=True, text=True,
                          timeout=120)


def in_django(env: dict[str, str], code: str, tmp_path) -> dict:
    """Run `code` after django.setup() in a process with `env`; it sets `result`, returned as JSON."""
    script = "import json, django\ndjango.setup()\n" + textwrap.dedent(code) + "\nprint(json.dumps(result))\n"
    done = run_with(env, ["-c", script], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_check_deploy_is_clean_with_an_https_site_url(tmp_path):
    done = run_with(HTTPS_SITE, ["manage.py", "check", "--deploy", "--fail-level", "WARNING"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    # The one silenced: W021, HSTS preloading, off by default (studio/settings.py, docs/deploy.md).
    assert "System check identified no issues (1 silenced)." in done.stdout


def test_check_deploy_names_the_missing_preload_when_asked_for_it(tmp_path):
    """Preloading is off by default and its check silenced; with it on, nothing is silenced."""
    done = run_with({**HTTPS_SITE, "STUDIO_HSTS_PRELOAD": "1"}, ["manage.py", "check", "--deploy"], tmp_path)
    assert done.returncode == 0 and "no issues (0 silenced)" in done.stdout, done.stdout + done.stderr


REQUESTS = """
from django.test import Client, RequestFactory
from django.conf import settings
forwarded = RequestFactory().get("/billing/checkout/return/", HTTP_HOST="studio.example.com",
                                 HTTP_X_FORWARDED_PROTO="https")
plain = RequestFactory().get("/billing/checkout/return/", HTTP_HOST="studio.example.com")
client = Client()
redirect = client.get("/favicon.ico", HTTP_HOST="studio.example.com")
behind = client.get("/favicon.ico", HTTP_HOST="studio.example.com", HTTP_X_FORWARDED_PROTO="https")
result = {
    "forwarded": forwarded.build_absolute_uri(), "plain": plain.build_absolute_uri(),
    "redirect": [redirect.status_code, redirect.get("Location")],
    "behind": [behind.status_code, behind.get("Location"), behind.get("Strict-Transport-Security")],
    "proxy_count": settings.ALLAUTH_TRUSTED_PROXY_COUNT,
}
"""


def test_behind_a_tls_proxy_absolute_urls_are_https_and_http_is_redirected(tmp_path):
    env = {**HTTPS_SITE, "STUDIO_BEHIND_TLS_PROXY": "1", "STUDIO_TRUSTED_PROXY_COUNT": "1"}
    result = in_django(env, REQUESTS, tmp_path)
    assert result["forwarded"] == "https://studio.example.com/billing/checkout/return/"  # Stripe's return URL
    assert result["plain"] == "http://studio.example.com/billing/checkout/return/"
    assert result["redirect"] == [301, "https://studio.example.com/favicon.ico"]
    status, location, hsts = result["behind"]
    assert status == 301 and location == "/static/favicon.svg"  # served, not sent round again
    assert hsts == "max-age=31536000; includeSubDomains"
    assert result["proxy_count"] == 1


def test_without_the_proxy_setting_a_forwarded_proto_header_is_not_believed(tmp_path):
    result = in_django(HTTPS_SITE, REQUESTS, tmp_path)
    assert result["forwarded"].startswith("http://")
    assert result["behind"][:2] == [301, "https://studio.example.com/favicon.ico"]
    assert result["proxy_count"] == 0


def test_an_http_site_url_redirects_nothing(tmp_path):
    env = {"STUDIO_SITE_URL": "http://127.0.0.1:8000", "STUDIO_ALLOWED_HOSTS": "studio.example.com"}
    result = in_django(env, REQUESTS, tmp_path)
    assert result["redirect"] == [301, "/static/favicon.svg"] and result["behind"][2] is None


@pytest.mark.parametrize("env, expected", [
    ({"STUDIO_HSTS_SECONDS": "600", "STUDIO_HSTS_INCLUDE_SUBDOMAINS": "0"}, "max-age=600"),
    ({"STUDIO_HSTS_PRELOAD": "1"}, "max-age=31536000; includeSubDomains; preload"),
])
def test_hsts_is_configurable(tmp_path, env, expected):
    result = in_django({**HTTPS_SITE, "STUDIO_BEHIND_TLS_PROXY": "1", **env}, REQUESTS, tmp_path)
    assert result["behind"][2] == expected
