"""The REST API's frame: key authentication (bearer and A1111-style Basic), scopes, RFC 9457 problem
details for every error (ninja's own included), per-key rate limits, and the read endpoints."""

from __future__ import annotations

import base64
import json

import pytest
from django.conf import settings
from django.test import Client, override_settings

from accounts import services as accounts
from accounts.api import ApiProblem, require_scope
from billing import services as billing
from generation import services as generation
from tests.api.conftest import fast_user as make_user
from tests.factories import give_credits

pytestmark = [pytest.mark.django_db]
PROBLEM = "application/problem+json"


@pytest.fixture
def keyed():
    user = make_user(email="ada@example.com")
    give_credits(user, 50)
    key, token = accounts.api_key_create(actor=user, name="script", scopes=["generate"], monthly_credit_cap=30)
    return user, key, token


def bearer(token):
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def assert_problem(response, status, slug):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith(PROBLEM)
    body = response.json()
    assert body["type"] == f"/api/problems/{slug}" and body["status"] == status
    assert body["title"] and body["detail"]
    return body


def test_me_and_balance_answer_for_the_key(client, keyed):
    user, key, token = keyed
    me = client.get("/api/v1/me", **bearer(token))
    assert me.status_code == 200 and me["Content-Type"].startswith("application/json")
    assert me.json()["owner"] == {"kind": "user", "id": str(user.pk), "name": user.get_username()}
    assert me.json()["key"]["prefix"] == key.prefix and me.json()["key"]["scopes"] == ["generate"]
    billing.credits_reserve(user=user, subject="job:x", amount=8, api_key=key)
    billing.credits_capture(subject="job:x", amount=8)
    balance = client.get("/api/v1/balance", **bearer(token)).json()
    assert balance == {"wallet": "user", "available": 42, "held": 0,
                       "key": {"monthly_credit_cap": 30, "used_this_month": 8, "left_this_month": 22}}
    usage = client.get("/api/v1/usage?days=2", **bearer(token)).json()
    assert usage["total"] == 8 and len(usage["days"]) == 2 and usage["days"][-1]["charges"] == 1


def test_a_team_key_sees_the_team_wallet(client):
    owner = make_user()
    team = generation.team_create(user=owner, name="Blue")
    key, token = accounts.api_key_create(actor=owner, name="ci", scopes=["read_images"], team=team)
    me = client.get("/api/v1/me", **bearer(token)).json()
    assert me["owner"] == {"kind": "team", "id": str(team.pk), "name": "Blue"}
    assert client.get("/api/v1/balance", **bearer(token)).json()["wallet"] == "team"


def test_models_and_samplers(client, keyed):
    _, _, token = keyed
    models = client.get("/api/v1/models", **bearer(token)).json()
    assert len(models) == 1 and models[0]["native_width"] >= 64 and len(models[0]["hash"]) == 10
    samplers = client.get("/api/v1/samplers", **bearer(token)).json()
    assert {"name": "euler_a", "label": "Euler a"} in samplers


def test_http_basic_with_the_key_as_password_works_like_a1111_api_auth(client, keyed):
    _, key, token = keyed
    basic = base64.b64encode(f"anyone:{token}".encode()).decode()
    assert client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Basic {basic}").json()["key"]["prefix"] == key.prefix
    wrong = base64.b64encode(b"anyone:sk_live_nope").decode()
    assert_problem(client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Basic {wrong}"), 401, "unauthorized")


def test_authentication_failures_are_problems(client, keyed):
    user, key, token = keyed
    body = assert_problem(client.get("/api/v1/me"), 401, "unauthorized")
    assert "Send an API key" in body["detail"] and body["instance"] == "/api/v1/me"
    response = client.get("/api/v1/balance", **bearer(token + "x"))
    assert "not valid" in assert_problem(response, 401, "unauthorized")["detail"]
    assert "Bearer" in response["WWW-Authenticate"]
    assert_problem(client.get("/api/v1/me", HTTP_AUTHORIZATION="Token abc"), 401, "unauthorized")
    accounts.api_key_revoke(actor=user, key=key)
    assert_problem(client.get("/api/v1/me", **bearer(token)), 401, "unauthorized")
    # a session does not authenticate the API (no cookies, so no CSRF to worry about)
    client.force_login(user)
    assert_problem(client.get("/api/v1/me"), 401, "unauthorized")


def test_a_missing_scope_is_a_403_problem(rf, keyed):
    _, key, _ = keyed
    request = rf.get("/api/v1/anything")
    request.auth = key
    assert require_scope(request, "generate") == key
    with pytest.raises(ApiProblem) as refused:
        require_scope(request, "train")
    assert refused.value.status == 403 and refused.value.slug == "insufficient-scope"


def test_validation_errors_unknown_routes_and_wrong_methods_are_problems(client, keyed):
    _, _, token = keyed
    body = assert_problem(client.get("/api/v1/usage?days=0", **bearer(token)), 422, "validation-error")
    assert body["errors"][0]["loc"][-1] == "days" and body["detail"].startswith("days:")
    assert_problem(client.get("/api/v1/usage?days=abc", **bearer(token)), 422, "validation-error")
    assert_problem(client.get("/api/v1/nothing-here", **bearer(token)), 404, "not-found")
    assert_problem(client.get("/api/v2/me"), 404, "not-found")
    response = client.post("/api/v1/me", **bearer(token))
    assert_problem(response, 405, "method-not-allowed")
    assert response["Allow"] == "GET"
    described = client.get("/api/problems/insufficient-credits").json()
    assert described == {"type": "/api/problems/insufficient-credits", "status": 402, "title": "Not enough credits"}


@override_settings(STUDIO_API_RATE_BURST=(3, 60), STUDIO_API_RATE_SUSTAINED=(5, 3600))
def test_rate_limits_per_key_with_headers_and_429(client, keyed):
    user, _, token = keyed
    _, other_token = accounts.api_key_create(actor=user, name="other", scopes=["generate"])
    remaining = []
    for _ in range(3):
        response = client.get("/api/v1/samplers", **bearer(token))
        assert response.status_code == 200
        assert response["RateLimit-Limit"] == "3" and 0 < int(response["RateLimit-Reset"]) <= 60
        remaining.append(int(response["RateLimit-Remaining"]))
    assert remaining == [2, 1, 0]
    assert response["RateLimit-Policy"] == '3;w=60;name="burst", 5;w=3600;name="sustained"'
    refused = client.get("/api/v1/samplers", **bearer(token))
    body = assert_problem(refused, 429, "rate-limited")
    assert 0 < int(refused["Retry-After"]) <= 60 and refused["RateLimit-Remaining"] == "0"
    assert "3 requests in 60 s" in body["detail"]
    assert client.get("/api/v1/samplers", **bearer(other_token)).status_code == 200  # each key its own budget


def test_rate_limits_fail_open_without_the_cache(client, keyed, monkeypatch):
    from django.core.cache import cache
    from redis.exceptions import ConnectionError as RedisConnectionError

    def down(*args, **kwargs):
        raise RedisConnectionError("down")

    monkeypatch.setattr(cache, "incr", down)
    _, _, token = keyed
    response = client.get("/api/v1/me", **bearer(token))
    assert response.status_code == 200 and "RateLimit-Limit" not in response


def test_the_openapi_schema_is_valid_and_public(client):
    import jsonschema_rs
    import schemathesis

    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    schemathesis.openapi.from_dict(schema).validate()  # against the OpenAPI 3.1 meta-schema
    broken = json.loads(json.dumps(schema))
    broken["paths"]["/api/v1/me"]["get"]["responses"] = "none"
    with pytest.raises(jsonschema_rs.ValidationError):  # the check is real
        schemathesis.openapi.from_dict(broken).validate()
    assert schema["openapi"].startswith("3.")
    assert {"/api/v1/me", "/api/v1/balance", "/api/v1/usage", "/api/v1/models", "/api/v1/samplers"} <= set(schema["paths"])
    schemes = schema["components"]["securitySchemes"]
    assert {s["scheme"] for s in schemes.values()} == {"bearer", "basic"}
    errors = schema["paths"]["/api/v1/me"]["get"]["responses"]["401"]["content"]
    assert list(errors) == [PROBLEM]


def test_the_docs_page_uses_local_files_only(client):
    response = client.get("/api/v1/docs")
    html = response.content.decode()
    assert response.status_code == 200 and "/static/ninja/swagger-ui-bundle.js" in html
    assert "cdn" not in html.lower() and "http" not in html.split("<body", 1)[1].replace("http-equiv", "")
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    # no inline script runs: the only inline <script> is a JSON data block
    for block in html.split("<script")[1:]:
        tag = block.split(">", 1)[0]
        assert "src=" in tag or 'type="application/json"' in tag
    assert client.get("/static/ninja/swagger-ui-bundle.js").status_code == 200
    json.loads(html.split('id="swagger-settings">', 1)[1].split("</script>", 1)[0])


def test_the_a1111_dialect_reads_the_model_samplers_and_options_with_api_auth(client, keyed):
    _, _, token = keyed
    basic = {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(f"user:{token}".encode()).decode()}
    models = client.get("/sdapi/v1/sd-models", **basic).json()
    title = models[0]["title"]
    assert title == f"{models[0]['model_name']} [{models[0]['hash']}]"
    samplers = client.get("/sdapi/v1/samplers", **basic).json()
    assert {"name": "Euler a", "aliases": ["euler_a"], "options": {}} in samplers
    assert client.get("/sdapi/v1/options", **basic).json()["sd_model_checkpoint"] == title
    strict = Client(enforce_csrf_checks=True)  # a script sends no CSRF token: the API needs none
    refused = strict.post("/sdapi/v1/options", data={"sd_model_checkpoint": "x"}, content_type="application/json",
                          **basic)
    assert "shared server" in assert_problem(refused, 403, "forbidden")["detail"]
    assert_problem(client.get("/sdapi/v1/sd-models"), 401, "unauthorized")
    assert_problem(client.post("/sdapi/v1/txt2img", **basic), 400, "bad-request")  # no body (tests/api/test_a1111.py)
    home = client.get("/")
    assert home.status_code == 200 and home["Content-Type"].startswith("text/html")  # the home page, not the API root


@pytest.mark.django_db
def test_a_body_over_the_limit_is_a_413_problem_not_a_server_error(client):
    user = make_user()
    _, token = accounts.api_key_create(actor=user, name="k", scopes=["generate"])
    body = json.dumps({"prompt": "x", "source": "A" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)})
    response = client.post("/api/v1/generations", body, content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 413 and response["Content-Type"] == "application/problem+json"
    assert response.json()["type"] == "/api/problems/payload-too-large" and "multipart" in response.json()["detail"]
