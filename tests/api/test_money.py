"""Money through the API: many concurrent POST /api/v1/generations over real HTTP (a live server,
real threads, each request on its own database connection) never exceed a key's monthly cap or a
wallet's balance; concurrent retries with one Idempotency-Key make one job, charged once; a job
cancelled through the API, or failed by its worker, gives its credits back."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter

import pytest
import requests
from django.db import connection
from django.test import Client

from accounts import services as accounts
from billing.models import EntryKind, LedgerEntry
from billing.selectors import api_key_used_this_month, wallet_balance, wallets_out_of_balance
from generation import services
from generation.models import Job, JobState
from generation.services.jobs import job_cost
from tests.api.conftest import fast_user
from tests.factories import give_credits

# 4 credits (a price above 1 leaves room for "a bit more than n holds"); no job runs here
BODY = {"prompt": "a red circle", "width": 256, "height": 256, "steps": 30, "num_images": 4}
URL = "/api/v1/generations"


def body_price() -> int:
    return job_cost(**{name: BODY[name] for name in ("width", "height", "steps", "num_images")})


@pytest.fixture
def no_rate_limits(settings):
    """Fifty calls in a second on one key are this test's point, not a burst to refuse."""
    settings.STUDIO_API_RATE_BURST = (100_000, 10)
    settings.STUDIO_API_RATE_SUSTAINED = (100_000, 3600)


def key_for(user, **extra) -> tuple[object, str]:
    return accounts.api_key_create(actor=user, name="money", scopes=["generate"], **extra)


def post_all_at_once(base_url: str, calls: list[tuple[str, dict]]) -> list[tuple[str, int, dict, dict]]:
    """Each (token, extra headers) POSTs BODY from its own thread, released together by a barrier.
    Returns (token, status, body, headers) per call.

    Every call carries an Idempotency-Key (its own, unless the headers give one) and is retried with
    it when the connection drops: fifty connections at once overflow the test server's listen
    backlog, and a client retries such a call safely only this way."""
    barrier = threading.Barrier(len(calls))
    lock = threading.Lock()
    answers = []

    def post(token: str, headers: dict) -> None:
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4()), **headers}
        barrier.wait(timeout=60)
        for attempt in range(5):
            try:
                response = requests.post(base_url + URL, json=BODY, timeout=120, headers=headers)
                answer = (token, response.status_code, response.json(), dict(response.headers))
                break
            except requests.ConnectionError as error:
                answer = (token, 0, {"error": repr(error)}, {})
                time.sleep(0.1 * (attempt + 1))
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=post, args=call) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    assert len(answers) == len(calls), "a call never came back"
    return answers


def outcome(status: int, body: dict) -> str:
    return "202" if status == 202 else f"{status} {body.get('type', body)}"


@pytest.mark.database
@pytest.mark.django_db(transaction=True)
def test_concurrent_calls_keep_to_the_key_cap_and_the_balances(live_server, no_rate_limits):
    price = body_price()
    total = 50 if connection.vendor == "postgresql" else 16  # SQLite serialises writers: fewer suffice
    poor_count = 5 if total == 50 else 2
    rich = fast_user()
    give_credits(rich, 100 * price)
    capped, capped_token = key_for(rich, monthly_credit_cap=3 * price + price // 2)  # room for 3 holds
    poor = [fast_user() for _ in range(poor_count)]
    poor_tokens = {}
    for user in poor:
        give_credits(user, 2 * price + price // 2)  # two holds' worth, and a bit
        poor_tokens[key_for(user)[1]] = user
    calls = [(capped_token, {})] * (total // 2)
    calls += [(token, {}) for token in poor_tokens for _ in range((total - total // 2) // poor_count)]

    answers = post_all_at_once(live_server.url, calls)

    by_key = Counter((token, outcome(status, body)) for token, status, body, _ in answers)
    unexpected = sorted({o for (_, o) in by_key if o not in (
        "202", "402 /api/problems/key-cap-reached", "402 /api/problems/insufficient-credits")})
    assert unexpected == []
    assert by_key[(capped_token, "202")] == 3
    assert by_key[(capped_token, "402 /api/problems/key-cap-reached")] == total // 2 - 3
    for token, user in poor_tokens.items():
        assert by_key[(token, "202")] == 2
        assert wallet_balance(user=user) == (price // 2, 2 * price)  # available never below zero
    for token, status, _, headers in answers:
        if status == 202:
            assert int(headers["X-Credits-Charged"]) == price and int(headers["X-Credits-Balance"]) >= 0

    assert wallets_out_of_balance() == []
    assert api_key_used_this_month(api_key_id=capped.pk) == 3 * price <= capped.monthly_credit_cap
    assert Job.objects.count() == sum(count for (_, o), count in by_key.items() if o == "202")
    holds = LedgerEntry.objects.filter(kind=EntryKind.RESERVE)
    assert holds.count() == Job.objects.count() and all(entry.amount == price for entry in holds)


@pytest.mark.database
@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_with_one_idempotency_key_make_one_job_charged_once(live_server, no_rate_limits):
    price = body_price()
    user = fast_user()
    give_credits(user, 10 * price)
    _, token = key_for(user)
    retry = {"Idempotency-Key": str(uuid.uuid4())}

    answers = post_all_at_once(live_server.url, [(token, retry)] * 10)

    assert sorted(status for _, status, _, _ in answers) == [202] * 10, answers
    assert len({body["id"] for _, _, body, _ in answers}) == 1
    replayed = Counter(headers.get("Idempotent-Replayed", "") for *_, headers in answers)
    assert replayed[""] <= 1 and replayed["true"] >= 9  # the maker (unless its connection dropped: a retry)
    job = Job.objects.get(user=user)
    assert LedgerEntry.objects.filter(subject=job.billing_subject, kind=EntryKind.RESERVE).count() == 1
    assert wallet_balance(user=user) == (9 * price, price)
    assert wallets_out_of_balance() == []


# --- Refunds: through the Django test client (one request at a time) -------------------------------


def submitted(client: Client, auth: dict, price: int) -> dict:
    response = client.post(URL, json.dumps(BODY), content_type="application/json", **auth)
    assert response.status_code == 202, response.content
    assert response["X-Credits-Charged"] == str(price)
    return response.json()


@pytest.mark.django_db
def test_cancelling_a_queued_job_through_the_api_refunds_it_and_frees_the_cap():
    price = body_price()
    client, user = Client(), fast_user()
    give_credits(user, 5 * price)
    key, token = key_for(user, monthly_credit_cap=price)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    job = submitted(client, auth, price)
    assert wallet_balance(user=user) == (4 * price, price)
    refused = client.post(URL, json.dumps(BODY), content_type="application/json", **auth)
    assert refused.status_code == 402 and refused.json()["type"] == "/api/problems/key-cap-reached"

    cancelled = client.post(f"{URL}/{job['id']}/cancel", **auth)
    assert cancelled.status_code == 200 and cancelled.json()["state"] == JobState.CANCELLED
    assert cancelled.json()["credits_charged"] == 0 and cancelled["X-Credits-Balance"] == str(5 * price)
    assert wallet_balance(user=user) == (5 * price, 0)
    assert api_key_used_this_month(api_key_id=key.pk) == 0  # the cap has room again
    assert client.post(f"{URL}/{job['id']}/cancel", **auth).status_code == 409  # refunded once only
    assert wallet_balance(user=user) == (5 * price, 0)
    submitted(client, auth, price)
    assert wallets_out_of_balance() == []


@pytest.mark.django_db
def test_a_job_that_fails_refunds_it():
    price = body_price()
    client, user = Client(), fast_user()
    give_credits(user, 5 * price)
    key, token = key_for(user)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    job = submitted(client, auth, price)
    lease = services.job_claim_next(worker_id="money")
    assert lease is not None and str(lease.job_id) == job["id"]
    services.job_fail(lease=lease, reason="the engine ran out of memory")

    failed = client.get(f"{URL}/{job['id']}", **auth).json()
    assert (failed["state"], failed["credits_charged"]) == (JobState.FAILED, 0)
    assert wallet_balance(user=user) == (5 * price, 0)
    assert api_key_used_this_month(api_key_id=key.pk) == 0
    assert LedgerEntry.objects.filter(subject=Job.objects.get(pk=job["id"]).billing_subject,
                                      kind=EntryKind.RELEASE).count() == 1
    assert wallets_out_of_balance() == []
