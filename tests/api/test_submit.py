"""generation/api/submit.py, below the endpoints: who a key submits as, Idempotency-Key (also when
two retries race), and how refusals and costs are reported."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from django.test import RequestFactory

from accounts import services as accounts
from accounts.api import ApiProblem
from accounts.models import Membership
from billing.models import LedgerEntry
from billing.selectors import wallet_balance
from billing.services import ApiKeyCapReached, InsufficientCredits
from generation import services as generation
from generation.api import submit
from generation.models import ApiIdempotencyKey, Job
from tests.api.conftest import fast_user
from tests.factories import give_credits

FIELDS = dict(prompt="a red star", negative_prompt="", width=64, height=64, steps=4, guidance_scale=7.0,
              sampler="euler", seed=1, num_images=1)


def _post(path="/api/v1/generations"):
    return RequestFactory().post(path)


def _job_submit(user, key, **destination):
    return lambda: generation.job_submit(user=user, **FIELDS, **destination, api_key=key)


@pytest.mark.django_db
def test_a_user_key_submits_as_its_user_into_their_own_gallery():
    user = fast_user()
    key, _ = accounts.api_key_create(actor=user, name="k", scopes=["generate"])
    actor = submit.key_actor(key)
    assert actor.user == user and actor.destination() == {"team": None, "bill_team": False}


@pytest.mark.django_db
def test_a_team_key_submits_as_its_admin_maker_until_the_maker_is_demoted():
    owner, admin = fast_user(), fast_user()
    team = generation.team_create(user=owner, name="Blue")
    Membership.objects.create(team=team, user=admin, role="admin")
    key, _ = accounts.api_key_create(actor=admin, name="team", scopes=["generate"], team=team)
    actor = submit.key_actor(key)
    assert actor.user == admin and actor.destination() == {"team": team, "bill_team": True}

    Membership.objects.filter(team=team, user=admin).update(role="member")
    with pytest.raises(ApiProblem) as refused:
        submit.key_actor(key)
    assert refused.value.slug == "forbidden" and "no longer" in refused.value.detail


@pytest.mark.django_db
def test_the_same_idempotency_key_and_request_make_one_job_charged_once():
    user = fast_user()
    give_credits(user, 100)
    key, _ = accounts.api_key_create(actor=user, name="k", scopes=["generate"])
    fingerprint = submit.request_fingerprint(_post(), {"prompt": "a red star", "steps": 4})
    first = submit.submit_once(key=key, idempotency_key="abc", fingerprint=fingerprint, submit=_job_submit(user, key))
    again = submit.submit_once(key=key, idempotency_key="abc", fingerprint=fingerprint, submit=_job_submit(user, key))
    assert (first.replayed, again.replayed) == (False, True) and again.job == first.job
    assert Job.objects.filter(user=user).count() == 1
    assert LedgerEntry.objects.filter(kind="reserve", api_key=key).count() == 1
    assert submit.credits_charged(first.job) == first.job.cost
    assert wallet_balance(user=user)[0] == 100 - first.job.cost

    other = submit.request_fingerprint(_post(), {"steps": 4, "prompt": "a blue star"})
    with pytest.raises(ApiProblem) as conflict:
        submit.submit_once(key=key, idempotency_key="abc", fingerprint=other, submit=_job_submit(user, key))
    assert conflict.value.slug == "conflict"
    assert Job.objects.filter(user=user).count() == 1


def test_the_fingerprint_ignores_key_order_but_not_the_path_or_the_files():
    body = {"prompt": "x", "steps": 4}
    base = submit.request_fingerprint(_post(), body)
    assert submit.request_fingerprint(_post(), {"steps": 4, "prompt": "x"}) == base
    assert submit.request_fingerprint(_post("/sdapi/v1/txt2img"), body) != base
    assert submit.request_fingerprint(_post(), body, {"source": b"png"}) != base


@pytest.mark.parametrize("header", ["", " ", "x" * 256, "naïve", "tab\there"])
def test_a_malformed_idempotency_key_is_a_bad_request(header):
    request = RequestFactory().post("/api/v1/generations", headers={"Idempotency-Key": header})
    with pytest.raises(ApiProblem) as refused:
        submit.idempotency_key_of(request)
    assert refused.value.slug == "bad-request"


def test_no_idempotency_key_is_none_and_a_good_one_is_kept():
    assert submit.idempotency_key_of(RequestFactory().post("/")) is None
    request = RequestFactory().post("/", headers={"Idempotency-Key": " 5f0c-retry-1 "})
    assert submit.idempotency_key_of(request) == "5f0c-retry-1"


def test_refusals_become_problems_of_their_kind():
    assert submit.submit_problem(InsufficientCredits(needed=5, available=1)).slug == "insufficient-credits"
    assert submit.submit_problem(ApiKeyCapReached(key_name="k", cap=5, used=5, needed=1)).slug == "key-cap-reached"
    assert submit.submit_problem(generation.TooManyActiveJobs("busy")).status == 429
    assert submit.submit_problem(generation.LoraNotAllowed("gone")).slug == "forbidden"
    with pytest.raises(TypeError):
        submit.submit_problem(ValueError("not a refusal"))


@pytest.mark.django_db(transaction=True)
@pytest.mark.database
def test_racing_retries_with_one_idempotency_key_make_one_job():
    user = fast_user()
    give_credits(user, 1000)
    key, _ = accounts.api_key_create(actor=user, name="k", scopes=["generate"])
    fingerprint = submit.request_fingerprint(_post(), {"prompt": "a red star"})
    racers = 8 if connection.vendor == "postgresql" else 4
    barrier, results, errors = threading.Barrier(racers), [], []

    def retry():
        try:
            barrier.wait(timeout=30)
            results.append(submit.submit_once(key=key, idempotency_key="race", fingerprint=fingerprint,
                                              submit=_job_submit(user, key)))
        except Exception as error:  # noqa: BLE001 - the test reports every one
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=retry) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len({result.job.pk for result in results}) == 1
    assert sum(not result.replayed for result in results) == 1
    assert Job.objects.filter(user=user).count() == 1 and ApiIdempotencyKey.objects.count() == 1
    assert LedgerEntry.objects.filter(kind="reserve", api_key=key).count() == 1
