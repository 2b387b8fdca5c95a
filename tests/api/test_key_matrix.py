"""Every operation of the API x every kind of key: A's key, A's revoked key, A's key without the
scope, B's key, no key, the team's key. Only the right ones succeed; B never sees or touches A's
jobs, images or LoRAs (a 404, and nothing of A's in B's answers); a revoked or missing key is a
401 problem, a missing scope a 403 insufficient-scope; the team's key sees only the team's things.

The operations come from the live OpenAPI schema: one test per operation, and an operation without
an entry in OPERATIONS fails, so a new endpoint is covered the day it lands. The world (users,
keys, jobs, images, LoRAs) is built once for the module, inside a transaction rolled back at its
end; each test's changes (a cancel, a delete) roll back with the test.
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from asgiref.sync import async_to_sync
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.test import Client
from PIL import Image as PILImage
from PIL import PngImagePlugin

from accounts import services as accounts
from billing.models import LedgerEntry
from billing.selectors import wallet_balance
from billing.services import credits_transfer_to_team
from generation import events, services
from generation.models import Image, Job, LoRA, LoRASource, Training
from studio.api import api
from tests.api.conftest import fast_user
from tests.factories import give_credits, job_params
from tests.generation.test_training_pages import fitting_lora

pytestmark = [pytest.mark.django_db]

PROBLEM = "application/problem+json"
ALL_SCOPES = frozenset({"generate", "read_images", "train"})


# --- The world: A, B, and a team whose owner O has a private life too -----------------------------

@dataclass
class Party:
    """One caller's key and its things. `ids`: a path parameter -> this party's object for it
    (absent: it has none). `marks`: strings that appear only in answers about its things (ids,
    prompts, names): another caller's answer must contain none of them."""

    token: str
    ids: dict[str, str] = field(default_factory=dict)
    marks: set[str] = field(default_factory=set)

    def own(self, param: str, value) -> None:
        self.ids[param] = str(value)
        self.marks.add(str(value))


@dataclass
class World:
    a: Party
    b: Party
    team: Party
    owner_private: Party  # the team owner's personal things: not the team's
    a_revoked: str
    a_scoped: dict[frozenset, str]  # A's keys with fewer scopes, by their scopes
    a_user: object
    team_obj: object

    def others(self, me: Party) -> list[Party]:
        return [party for party in (self.a, self.b, self.team, self.owner_private) if party is not me]


def png(text: str = "", colour=(200, 30, 30)) -> bytes:
    out = io.BytesIO()
    info = PngImagePlugin.PngInfo()
    if text:
        info.add_text("parameters", text)
    PILImage.new("RGB", (64, 64), colour).save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def pictures() -> list[SimpleUploadedFile]:
    return [SimpleUploadedFile(f"{i}.png", png(colour=(i * 60, 30, 30)), content_type="image/png")
            for i in range(3)]


def claimed(user, prompt: str, **extra) -> tuple[Job, services.Lease]:
    """A job taken by a worker: the queue must hold no other, so the claim takes this one."""
    job = services.job_submit(user=user, **job_params(prompt=prompt), **extra)
    lease = services.job_claim_next(worker_id=f"matrix-{job.pk}")
    assert lease is not None and lease.job_id == job.pk
    return job, lease


def finished(user, prompt: str, **extra) -> tuple[Job, Image]:
    """A job run to success as the worker finishes one: its PNG stored, then job_succeed."""
    job, lease = claimed(user, prompt, **extra)
    infotext = f"{prompt}\nSeed: 42"
    name = default_storage.save(f"images/matrix/{job.pk}/0.png", ContentFile(png(infotext)))
    services.job_succeed(lease=lease, engine_seconds=0.1, images=[services.StoredImage(
        index=0, seed=42, width=64, height=64, file_name=name, thumbnail_name=name, infotext=infotext)])
    return job, job.images.get()


def training(user, token: str) -> Job:
    """A queued training started through the API, with one sample picture recorded at step 5."""
    body = {"name": "matrix-dog", "instance_prompt": "zwx dog", "preset": "quick", "images": pictures()}
    response = Client().post("/api/v1/trainings", body, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    sample = default_storage.save(f"trainings/{user.pk}/{job.pk}/s5.png", ContentFile(png()))
    Training.objects.filter(pk=job.pk).update(samples=[{"step": 5, "files": [sample]}])
    return job


def lora(owner, name: str, team=None) -> LoRA:
    made = services.lora_create_from_bytes(owner=owner, name=name, data=f"lora {name}".encode(),
                                           source=LoRASource.IMPORTED, base_model="studio-tiny")
    if team is not None:
        LoRA.objects.filter(pk=made.pk).update(team=team, team_may_download=True)
    return made


def key(user, scopes=ALL_SCOPES, **extra) -> tuple[object, str]:
    return accounts.api_key_create(actor=user, name="matrix", scopes=sorted(scopes), **extra)


def build_world() -> World:
    ada, bob, olga = (fast_user(email=f"{name}-matrix@example.com") for name in ("ada", "bob", "olga"))
    for user in (ada, bob, olga):
        give_credits(user, 10_000)
    team = services.team_create(user=olga, name="matrix-team-blue")
    credits_transfer_to_team(user=olga, team=team, amount=5000, idempotency_key="matrix-team")
    a_key, a_token = key(ada)
    b_key, b_token = key(bob)
    team_key, team_token = key(olga, team=team)
    a = Party(a_token, marks={"ada-secret", "ada-matrix@example.com"})
    b = Party(b_token, marks={"bob-own", "bob-matrix@example.com"})
    t = Party(team_token, marks={"team-own", "matrix-team-blue"})
    o = Party(key(olga)[1], marks={"olga-private", "olga-matrix@example.com"})
    makers = {"a": (a, ada, "ada-secret", {"api_key": a_key}), "b": (b, bob, "bob-own", {"api_key": b_key}),
              "team": (t, olga, "team-own", {"team": team, "bill_team": True, "api_key": team_key})}
    for party, user, prompt, extra in makers.values():  # one at a time: each claim takes its own job
        job, image = finished(user, f"{prompt} done", **extra)
        party.own("done_generation_id", job.pk)
        party.own("image_id", image.pk)
        job, _ = claimed(user, f"{prompt} running", **extra)  # running: it has a preview
        party.own("generation_id", job.pk)
    o.own("generation_id", services.job_submit(user=olga, **job_params(prompt="olga-private queued")).pk)
    for party, owner, name, lora_team in (
        (a, ada, "ada-secret-lora", None), (b, bob, "bob-own-lora", None),
        (t, olga, "team-own-lora", team), (o, olga, "olga-private-lora", None),
    ):
        party.own("lora_id", lora(owner, name, lora_team).pk)
    for party, user in ((a, ada), (b, bob)):  # a team has no trainings: they are a user's
        party.own("training_id", training(user, party.token).pk)
        party.ids.update(step="5", index="0")

    revoked, revoked_token = key(ada)
    accounts.api_key_revoke(actor=ada, key=revoked)
    scoped = {frozenset(s): key(ada, s)[1] for s in (
        {"train"}, {"generate"}, {"read_images"}, {"generate", "train"}, {"read_images", "train"},
        {"generate", "read_images"},
    )}
    return World(a=a, b=b, team=t, owner_private=o, a_revoked=revoked_token, a_scoped=scoped, a_user=ada,
                 team_obj=team)


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock(), transaction.atomic():
        yield build_world()
        transaction.set_rollback(True)


@pytest.fixture(autouse=True)
def _previews(_fresh_redis_state, world):
    """The running jobs' latest preview, in the shared cache (emptied before every test)."""
    for party in (world.a, world.b, world.team):
        preview = "data:image/png;base64," + base64.b64encode(png()).decode()
        cache.set(events.live_keys(party.ids["generation_id"])[1], preview, 600)


# --- The operations -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Op:
    """What an operation needs and answers.

    scopes: any one of them suffices; () = any valid key. status: what the owner gets.
    json / form: a valid request body (form: multipart, made fresh for each call).
    ids: a path parameter -> which of the party's objects fills it (default: the same name).
    lists: the party object its answer lists (so the caller's must show, and nobody else's).
    team_status: what a team's key gets, on any id, where it differs from the owner (a user's things).
    waits: it holds the request until a job is done (A1111's synchronous calls): only refusals here.
    check: more to assert about a successful answer, given the world and the caller's name."""

    scopes: tuple[str, ...]
    status: int = 200
    json: dict | None = None
    form: Callable[[], dict] | None = None
    ids: dict[str, str] = field(default_factory=dict)
    lists: str = ""
    team_status: int | None = None
    waits: bool = False
    check: Callable | None = None


def created_where_the_key_says(world: World, who: str, response) -> None:
    job = Job.objects.get(pk=response.json()["id"])
    if who == "team":  # the team's gallery, on the team's wallet
        assert job.team_id == world.team_obj.pk
        holds = LedgerEntry.objects.filter(subject=job.billing_subject)
        assert list(holds.values_list("wallet__owner_team", flat=True)) == [world.team_obj.pk]
    elif who == "a":
        assert (job.user_id, job.team_id) == (world.a_user.pk, None)
    else:
        assert job.user_id != world.a_user.pk and job.team_id is None


def interrupted_only_its_own(world: World, who: str, response) -> None:
    assert response.json()["interrupted"] == 1  # its one running job, nobody else's


USERS_ONLY = 403  # a forbidden problem: a team's key cannot import, delete or train LoRAs (they are a user's)


GENERATION = {"prompt": "made by the matrix", "width": 64, "height": 64, "steps": 2}
TRAINING = {"name": "matrix-cat", "instance_prompt": "a photo of zwx cat", "preset": "quick"}
READ = ("generate", "read_images")  # either one reads generations, images, progress, A1111's LoRAs
OPERATIONS: dict[str, Op] = {
    "GET /api/v1/me": Op(()),
    "GET /api/v1/balance": Op(()),
    "GET /api/v1/usage": Op(()),
    "GET /api/v1/models": Op(()),
    "GET /api/v1/samplers": Op(()),
    "GET /api/v1/generations": Op(READ, lists="generation_id"),
    "POST /api/v1/generations": Op(("generate",), 202, json=GENERATION, check=created_where_the_key_says),
    "GET /api/v1/generations/{generation_id}": Op(READ),
    "POST /api/v1/generations/{generation_id}/cancel": Op(("generate",)),
    # a stream that ends once its job is final: follow a finished one
    "GET /api/v1/generations/{generation_id}/events": Op(READ, ids={"generation_id": "done_generation_id"}),
    "GET /api/v1/generations/{generation_id}/preview": Op(READ),
    "GET /api/v1/images": Op(READ, lists="image_id"),
    "GET /api/v1/images/{image_id}": Op(READ),
    "GET /api/v1/images/{image_id}/file": Op(READ),
    "DELETE /api/v1/images/{image_id}": Op(("read_images",), 204),
    "GET /api/v1/loras": Op(("generate", "read_images", "train"), lists="lora_id"),
    "GET /api/v1/loras/{lora_id}": Op(("generate", "read_images", "train")),
    "GET /api/v1/loras/{lora_id}/file": Op(("generate", "read_images", "train")),
    "POST /api/v1/loras": Op(("train",), 201, team_status=USERS_ONLY, form=lambda: {
        "name": "matrix-import", "lora_file": SimpleUploadedFile("style.safetensors", fitting_lora())}),
    "DELETE /api/v1/loras/{lora_id}": Op(("train",), 204, team_status=USERS_ONLY),
    "GET /api/v1/trainings": Op(("train", "read_images"), lists="training_id"),
    "POST /api/v1/trainings": Op(("train",), 202, team_status=USERS_ONLY,
                                 form=lambda: {**TRAINING, "images": pictures()}),
    "GET /api/v1/trainings/{training_id}": Op(("train", "read_images")),
    "GET /api/v1/trainings/{training_id}/samples/{step}/{index}": Op(("train", "read_images")),
    "POST /api/v1/trainings/{training_id}/cancel": Op(("train",)),
    "GET /sdapi/v1/sd-models": Op(()),
    "GET /sdapi/v1/samplers": Op(()),
    "GET /sdapi/v1/options": Op(()),
    # a shared server: its options are refused to every key
    "POST /sdapi/v1/options": Op((), 403, json={"sd_model_checkpoint": "x"}),
    "GET /sdapi/v1/progress": Op(READ, lists="generation_id"),
    "POST /sdapi/v1/interrupt": Op(("generate",), check=interrupted_only_its_own),
    "GET /sdapi/v1/loras": Op(READ, lists="lora_id"),
    "POST /sdapi/v1/png-info": Op((), json={"image": base64.b64encode(png("a cat\nSeed: 1")).decode()}),
    # txt2img/img2img hold the request until the job is done, and nothing runs it here: only the
    # refusals (401, 403) are checked; their successes are tests/api/test_a1111.py's and the e2e's.
    "POST /sdapi/v1/txt2img": Op(("generate",), json={"prompt": "x", "steps": 2}, waits=True),
    "POST /sdapi/v1/img2img": Op(("generate",), json={"prompt": "x", "steps": 2, "init_images": [
        base64.b64encode(png()).decode()]}, waits=True),
}


def schema_operations() -> list[str]:
    paths = api.get_openapi_schema()["paths"]
    return sorted(f"{method.upper()} {path}" for path, ops in paths.items() for method in ops)


# --- Calling and asserting --------------------------------------------------------------------------

def path_params(op_id: str) -> list[str]:
    return re.findall(r"{(\w+)}", op_id)


def call(op_id: str, target: Party, token: str | None):
    """The operation on `target`'s objects (its path's ids), with `token` (None: no key)."""
    op = OPERATIONS[op_id]
    method, path = op_id.split(" ", 1)
    path = path.format(**{param: target.ids[op.ids.get(param, param)] for param in path_params(op_id)})
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    if op.form is not None:
        return Client().post(path, op.form(), **headers)
    body = json.dumps(op.json) if op.json is not None else ""
    return Client().generic(method, path, body, content_type="application/json", **headers)


def has_target(op_id: str, party: Party) -> bool:
    op = OPERATIONS[op_id]
    return all(op.ids.get(param, param) in party.ids for param in path_params(op_id))


def text_of(response) -> str:
    if response.streaming and response.is_async:  # the SSE stream: it ends once its job is final
        async def read() -> bytes:
            return b"".join([chunk async for chunk in response.streaming_content])
        return async_to_sync(read)().decode("latin-1")
    if response.streaming:
        return b"".join(response.streaming_content).decode("latin-1")
    return response.content.decode("latin-1")


def assert_problem(response, status: int, slug: str) -> None:
    assert response.status_code == status, text_of(response)[:500]
    assert response["Content-Type"].startswith(PROBLEM)
    assert response.json()["type"] == f"/api/problems/{slug}"


def assert_answer(response, status: int) -> None:
    if status >= 400:  # an operation that refuses this caller whatever it asks: the same problem each time
        assert_problem(response, status, "forbidden")
    else:
        assert response.status_code == status, text_of(response)[:500]


def assert_sees_only_its_own(world: World, who: str, op: Op, response) -> None:
    me = getattr(world, who)
    text = text_of(response)
    others = world.others(me)
    leaked = sorted(mark for party in others for mark in party.marks if mark in text)
    assert leaked == [], f"{who} sees others' things: {leaked}"
    if op.lists and op.lists in me.ids:
        assert me.ids[op.lists] in text, f"{who} does not see its own {op.lists}"


def lacking(world: World, scopes: tuple[str, ...]) -> str:
    """A's key with every scope but the ones that would do (with no scope needed: train only)."""
    return world.a_scoped[ALL_SCOPES - set(scopes)] if scopes else world.a_scoped[frozenset({"train"})]


def footprint(world: World) -> tuple:
    """What another caller must never change: A's jobs, images, LoRAs, wallet."""
    ada = world.a_user
    return (
        sorted(Job.objects.filter(user=ada).values_list("pk", "state", "cancel_requested")),
        sorted(Image.objects.filter(owner=ada).values_list("pk", flat=True)),
        sorted(LoRA.objects.filter(owner=ada).values_list("pk", flat=True)),
        wallet_balance(user=ada),
    )


def everything() -> tuple[int, int, int, int]:
    """A refused call changes nothing at all."""
    return Job.objects.count(), LedgerEntry.objects.count(), Image.objects.count(), LoRA.objects.count()


# --- The tests ---------------------------------------------------------------------------------------

def test_the_table_names_only_operations_the_schema_has():
    assert sorted(set(OPERATIONS) - set(schema_operations())) == []


@pytest.mark.parametrize("op_id", schema_operations())
def test_every_key_gets_the_right_answer(world, op_id):
    if op_id not in OPERATIONS:
        pytest.fail(f"{op_id} is in the API but not in this test's OPERATIONS: say which scopes it needs, "
                    "how to call it, and what its owner gets.")
    op = OPERATIONS[op_id]
    targets_an_object = bool(path_params(op_id))

    before, counts = footprint(world), everything()
    for token in (world.a_revoked, None):
        response = call(op_id, world.a, token)
        assert_problem(response, 401, "unauthorized")
        assert "Bearer" in response["WWW-Authenticate"]
    if op.scopes and set(op.scopes) != ALL_SCOPES:  # (any scope at all reads LoRAs: no key lacks it)
        assert_problem(call(op_id, world.a, lacking(world, op.scopes)), 403, "insufficient-scope")
    assert everything() == counts and footprint(world) == before, "a refused call changed something"
    if op.waits:
        return
    if not op.scopes:  # nothing to lack: a key with any scope gets what the owner gets
        assert_answer(call(op_id, world.a, lacking(world, op.scopes)), op.status)

    for who in ("b", "team"):
        caller = getattr(world, who)
        status = op.team_status if who == "team" and op.team_status else op.status
        if targets_an_object:  # A's object, for anyone else, is a 404: the same as one that does not exist
            response = call(op_id, world.a, caller.token)
            if status == op.status:
                assert_problem(response, 404, "not-found")
            else:
                assert_answer(response, status)
        if not targets_an_object or has_target(op_id, caller):
            response = call(op_id, caller if targets_an_object else world.a, caller.token)
            assert_answer(response, status)
            if response.status_code < 400:
                assert_sees_only_its_own(world, who, op, response)
                if op.check:
                    op.check(world, who, response)
        assert footprint(world) == before, f"{who} changed A's things"

    response = call(op_id, world.a, world.a.token)
    assert_answer(response, op.status)
    assert_sees_only_its_own(world, "a", op, response)
    if op.check:
        op.check(world, "a", response)


def test_a_team_key_lists_only_the_teams_loras_in_a1111(world):
    names = [lora["name"] for lora in Client().get(
        "/sdapi/v1/loras", HTTP_AUTHORIZATION=f"Bearer {world.team.token}").json()]
    assert names == ["team-own-lora"]
