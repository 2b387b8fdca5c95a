"""Creating jobs through the API: what /api/v1/generations, /api/v1/trainings and A1111's txt2img
and img2img share, so each endpoint only translates its own dialect.

- `key_actor`: who a key submits as and whose wallet it spends. A user's key: its user, their
  wallet, their gallery. A team's key: the admin who made it (`ApiKey.created_by`), into the
  team's gallery, on the team's wallet; while that admin is still one of the team's admins
  (a demoted or departed maker's key is refused with a 403 until an admin makes a new one).
- `submit_once`: `Idempotency-Key` (Stripe's convention). The same key and the same request
  return what the first call made (a job, charged once, or an imported LoRA); the same key with
  another request is a 409. The row is written in the creating transaction, so two racing
  retries make one.
- `job_from_form`, `form_problem` / `submit_problem`: the web's forms and services decide what is
  valid and allowed (one set of rules for the web and the API); these run them and turn their
  refusals into problems.
- `created_headers`, `spend_headers`: `Location`, `Idempotent-Replayed`, `X-Credits-Charged` (the
  job's hold, or what it was charged once final) and `X-Credits-Balance` (the spending wallet's
  available credits) on every response that creates or spends.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

from django.db import IntegrityError, transaction

from accounts import permissions as team_permissions
from accounts.api import ApiProblem
from accounts.models import ApiKey
from billing.selectors import subject_charge, team_wallet_balance, wallet_balance
from billing.services import ApiKeyCapReached, InsufficientCredits
from generation.models import ApiIdempotencyKey, Job, LoRA
from generation.services import jobs as job_services
from generation.services.files import files_delete_now
from generation.services.sd_models import ModelNotUsable

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY_LENGTH = 255


# --- Who submits ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class KeyActor:
    user: object  # the User the job is made by
    team: object | None  # with a team key: the team whose gallery and wallet it uses

    def destination(self) -> dict:
        """job_submit's `team` and `bill_team`."""
        return {"team": self.team, "bill_team": self.team is not None}


def key_actor(key: ApiKey) -> KeyActor:
    if key.owner_team_id is None:
        return KeyActor(user=key.owner_user, team=None)
    maker = key.created_by
    role = team_permissions.role_of(user=maker, team_id=key.owner_team_id) if maker is not None else None
    if maker is None or not maker.is_active or not team_permissions.can_manage_api_keys(role):
        raise ApiProblem(
            "forbidden", "The admin who made this team key is no longer one of the team's admins, so it cannot "
            "spend the team's credits; ask an admin of the team to make a new key.",
        )
    return KeyActor(user=maker, team=key.owner_team)


# --- Idempotency ---------------------------------------------------------------------------------

def idempotency_key_of(request) -> str | None:
    value = request.headers.get(IDEMPOTENCY_HEADER)
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > MAX_IDEMPOTENCY_KEY_LENGTH or not value.isascii() or not value.isprintable():
        raise ApiProblem("bad-request", f"{IDEMPOTENCY_HEADER} must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} printable "
                                        "ASCII characters (a UUID is a good choice).")
    return value


def request_fingerprint(request, body: dict, files: dict[str, bytes] | None = None) -> str:
    """SHA-256 over the method, the path and the request as parsed (key order and JSON spacing do
    not matter; an uploaded file counts by its own SHA-256)."""
    canonical = {
        "method": request.method, "path": request.path, "body": body,
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in sorted((files or {}).items())},
    }
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class Submitted:
    job: Job | None  # what the call made: a job (a generation, a training) ...
    replayed: bool  # True: an earlier call with the same Idempotency-Key made it
    lora: LoRA | None = None  # ... or an imported LoRA


def _submitted(made, *, replayed: bool) -> Submitted:
    if isinstance(made, LoRA):
        return Submitted(job=None, lora=made, replayed=replayed)
    return Submitted(job=made, replayed=replayed)


def _replay(key: ApiKey, idempotency_key: str, fingerprint: str) -> Job | LoRA | None:
    row = ApiIdempotencyKey.objects.select_related("job", "lora").filter(api_key=key, key=idempotency_key).first()
    if row is None:
        return None
    if row.request_hash != fingerprint:
        raise ApiProblem("conflict", f"This {IDEMPOTENCY_HEADER} was used with a different request; send a new key "
                                     "for a new request.")
    return row.made


def _stored_files(made: Job | LoRA) -> list[str]:
    """The files a creating call stored before its row: to remove when that row rolled back."""
    names = [getattr(made, field, None) for field in ("source_file", "mask_file", "file")]
    return [str(name) for name in names if name]


def submit_once(*, key: ApiKey, idempotency_key: str | None, fingerprint: str,
                submit: Callable[[], Job | LoRA]) -> Submitted:
    """Run `submit` (which makes one job, charging for it, or imports one LoRA) at most once per
    (key, idempotency key)."""
    if idempotency_key is None:
        with transaction.atomic():
            return _submitted(submit(), replayed=False)
    if (made := _replay(key, idempotency_key, fingerprint)) is not None:
        return _submitted(made, replayed=True)
    made = None
    try:
        with transaction.atomic():
            made = submit()
            kind = "lora" if isinstance(made, LoRA) else "job"
            ApiIdempotencyKey.objects.create(api_key=key, key=idempotency_key, request_hash=fingerprint,
                                             **{kind: made})
    except IntegrityError:  # a concurrent retry won the race: what it made stands, this one rolled back
        if made is not None:
            files_delete_now(_stored_files(made))
        if (winner := _replay(key, idempotency_key, fingerprint)) is not None:
            return _submitted(winner, replayed=True)
        raise
    return _submitted(made, replayed=False)


# --- Refusals as problems ------------------------------------------------------------------------

def form_problem(form, *, field_names: dict[str, str] | None = None) -> ApiProblem:
    """A 422 from a bound, invalid Django form: every error with where it is (`field_names` maps
    the form's field names to the request's, for a dialect that calls them otherwise)."""
    names = field_names or {}
    errors = []
    for field, field_errors in form.errors.get_json_data().items():
        loc = ["body"] if field == "__all__" else ["body", names.get(field, field)]
        errors.extend({"loc": loc, "msg": error["message"], "type": error["code"] or "invalid"}
                      for error in field_errors)
    first = errors[0]
    where = ".".join(first["loc"][1:]) or "request"
    return ApiProblem("validation-error", f"{where}: {first['msg']}", errors=errors)


def submit_problem(error: Exception) -> ApiProblem:
    """The API's answer to a service's refusal of a submit (job_submit, training_submit)."""
    if isinstance(error, ApiKeyCapReached):
        return ApiProblem("key-cap-reached", str(error))
    if isinstance(error, InsufficientCredits):
        return ApiProblem("insufficient-credits", str(error), needed=error.needed, available=error.available)
    if isinstance(error, job_services.TooManyActiveJobs):
        return ApiProblem("too-many-active-jobs", str(error))
    if isinstance(error, (job_services.TeamNotAllowed, job_services.LoraNotAllowed)):
        return ApiProblem("forbidden", str(error))
    if isinstance(error, ModelNotUsable):
        return ApiProblem("model-unavailable", str(error))
    raise TypeError(f"not a submit refusal: {error!r}") from error


SUBMIT_REFUSALS = (InsufficientCredits, job_services.TooManyActiveJobs, job_services.TeamNotAllowed,
                   job_services.LoraNotAllowed, ModelNotUsable)


def job_from_form(form, *, actor: KeyActor, key: ApiKey, field_names: dict[str, str] | None = None) -> Job:
    """Validate a web form bound from an API request and submit its job as the web would, with the
    key (the hold records it, its cap applies): the submit that submit_once runs at most once."""
    if not form.is_valid():
        raise form_problem(form, field_names=field_names)
    try:
        return job_services.job_submit(user=actor.user, **form.submit_fields(), canvas=getattr(form, "canvas", None),
                                       api_key=key)
    except SUBMIT_REFUSALS as error:
        raise submit_problem(error) from error


def cancel_active(job: Job, *, what: str) -> Job:
    """Cancel a job of the key's (job_cancel: a queued one at once, refunded; a running one at its
    next step); one already final is a 409."""
    if not job.is_active:
        raise ApiProblem("conflict", f"This {what} has already {job.state}; there is nothing to cancel.")
    return job_services.job_cancel(job=job)


def created_headers(response, *, job: Job, key: ApiKey, replayed: bool, location: str) -> None:
    """A creating call's answer: where the new thing is, what it cost, and whether it is a replay."""
    response["Location"] = location
    spend_headers(response, job=job, key=key)
    if replayed:
        response["Idempotent-Replayed"] = "true"


# --- What it cost --------------------------------------------------------------------------------

def credits_charged(job: Job) -> int:
    """The hold while the job is open; once final, what it was charged (0 for a refunded job)."""
    charge = subject_charge(subject=job.billing_subject)
    return charge["on_hold"] if charge["on_hold"] else charge["spent"]


def credits_available(key: ApiKey) -> int:
    if key.owner_team_id is not None:
        return team_wallet_balance(team_id=key.owner_team_id)[0]
    return wallet_balance(user=key.owner_user)[0]


def spend_headers(response, *, job: Job, key: ApiKey) -> None:
    response["X-Credits-Charged"] = str(credits_charged(job))
    response["X-Credits-Balance"] = str(credits_available(key))
