"""AUTOMATIC1111's dialect (/sdapi/v1/): txt2img and img2img wait for their job without a thread
(on the real Redis channel layer), a client that hangs up or waits too long gets its job cancelled
and refunded; A1111's request fields and answers; the key's own progress and interrupt; LoRAs;
png-info. The worker is played here through the queue services (as the worker calls them); the
real worker is tests/e2e/test_a1111_stack.py."""

from __future__ import annotations

import asyncio
import base64
import io
import json

import pytest
from asgiref.sync import sync_to_async
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import AsyncClient, Client, override_settings
from PIL import Image as PILImage
from PIL import PngImagePlugin

from accounts import services as accounts
from billing.selectors import wallet_balance
from generation import services
from generation.api import a1111_generate
from generation.models import Job, JobState
from studio.asgi import application
from tests.api.conftest import fast_user
from tests.factories import give_credits
from tests.generation.test_create_loras import make_lora

TXT2IMG = {"prompt": "a red star", "negative_prompt": "green", "width": 64, "height": 64, "steps": 4,
           "cfg_scale": 6.5, "sampler_name": "Euler a", "seed": 7, "batch_size": 2, "n_iter": 1}


def key_for(user, scopes=("generate",)) -> str:
    return accounts.api_key_create(actor=user, name="a1111", scopes=list(scopes))[1]


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def png(color="red", size=(64, 64), text: dict | None = None) -> bytes:
    out = io.BytesIO()
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    PILImage.new("RGB", size, color).save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def play_worker(job_id, *, fail: str = "") -> None:
    """Claim the job and finish it as the worker does: PNGs stored, then job_succeed (or job_fail)."""
    lease = services.job_claim_next(worker_id="test")
    assert lease is not None and lease.job_id == job_id
    if fail:
        services.job_fail(lease=lease, reason=fail)
        return
    job = Job.objects.get(pk=job_id)
    stored = []
    for index in range(job.num_images):
        name = default_storage.save(f"images/test/{job.pk}/{index}.png",
                                    ContentFile(png(text={"parameters": f"a red star\nSeed: {job.seed + index}"})))
        stored.append(services.StoredImage(index=index, seed=job.seed + index, width=64, height=64, file_name=name,
                                           thumbnail_name=name, infotext=f"a red star\nSeed: {job.seed + index}"))
    services.job_succeed(lease=lease, images=stored, engine_seconds=0.1)


async def job_appears(user, timeout=10.0) -> Job:
    for _ in range(int(timeout / 0.05)):
        job = await Job.objects.filter(user=user).afirst()
        if job is not None:
            return job
        await asyncio.sleep(0.05)
    raise AssertionError("no job was submitted")


# --- The wait: events, timeout, disconnect -------------------------------------------------------------

@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_txt2img_answers_once_its_job_succeeds_woken_by_the_event_and_a_retry_replays(monkeypatch):
    monkeypatch.setattr(a1111_generate, "RECHECK_SECONDS", 60)  # only the job.state event can end the wait in time
    user = await sync_to_async(fast_user)()
    await sync_to_async(give_credits)(user, 100)
    token = await sync_to_async(key_for)(user)
    client = AsyncClient()
    headers = {**auth(token), "Idempotency-Key": "retry-1"}
    request = asyncio.ensure_future(client.post("/sdapi/v1/txt2img", TXT2IMG, content_type="application/json",
                                                headers=headers))
    job = await job_appears(user)
    await asyncio.sleep(0.3)  # the view is waiting now
    await sync_to_async(play_worker)(job.pk)
    response = await asyncio.wait_for(request, timeout=20)

    assert response.status_code == 200, response.content
    body = response.json()
    assert len(body["images"]) == 2
    decoded = PILImage.open(io.BytesIO(base64.b64decode(body["images"][1])))
    assert decoded.format == "PNG" and decoded.text["parameters"].endswith("Seed: 8")
    info = json.loads(body["info"])
    assert info["all_seeds"] == [7, 8] and info["sampler_name"] == "Euler a" and info["cfg_scale"] == 6.5
    assert info["infotexts"][1].endswith("Seed: 8") and info["steps"] == 4 and info["sd_model_hash"]
    assert body["parameters"]["prompt"] == "a red star" and body["parameters"]["batch_size"] == 2
    job = await Job.objects.aget(pk=job.pk)
    assert (job.sampler, job.guidance_scale, job.num_images, job.negative_prompt) == ("euler_a", 6.5, 2, "green")
    assert int(response["X-Credits-Charged"]) == job.cost > 0

    again = await client.post("/sdapi/v1/txt2img", TXT2IMG, content_type="application/json", headers=headers)
    assert again.status_code == 200 and again["Idempotent-Replayed"] == "true"
    assert again.json()["images"] == body["images"] and await Job.objects.filter(user=user).acount() == 1


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_failed_job_is_a_problem_with_the_reason_and_costs_nothing():
    user = await sync_to_async(fast_user)()
    await sync_to_async(give_credits)(user, 100)
    token = await sync_to_async(key_for)(user)
    request = asyncio.ensure_future(AsyncClient().post(
        "/sdapi/v1/txt2img", {**TXT2IMG, "send_images": False}, content_type="application/json", headers=auth(token)))
    job = await job_appears(user)
    await sync_to_async(play_worker)(job.pk, fail="the engine ran out of memory")
    response = await asyncio.wait_for(request, timeout=20)
    assert response.status_code == 502 and response["Content-Type"] == "application/problem+json"
    assert "ran out of memory" in response.json()["detail"] and response.json()["error"]
    assert (await sync_to_async(wallet_balance)(user=user))[0] == 100


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@override_settings(STUDIO_A1111_WAIT_SECONDS=0.5)
async def test_a_wait_past_the_limit_cancels_the_job_refunds_it_and_answers_504():
    user = await sync_to_async(fast_user)()
    await sync_to_async(give_credits)(user, 100)
    token = await sync_to_async(key_for)(user)
    response = await AsyncClient().post("/sdapi/v1/txt2img", TXT2IMG, content_type="application/json",
                                        headers=auth(token))
    assert response.status_code == 504 and response.json()["type"] == "/api/problems/timeout"
    job = await Job.objects.aget(user=user)
    assert job.state == JobState.CANCELLED and response.json()["job_id"] == str(job.pk)
    assert (await sync_to_async(wallet_balance)(user=user))[0] == 100


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_client_that_hangs_up_while_waiting_gets_its_job_cancelled_and_refunded():
    """Through the ASGI app as daphne calls it: the client's http.disconnect cancels the view."""
    user = await sync_to_async(fast_user)()
    await sync_to_async(give_credits)(user, 100)
    token = await sync_to_async(key_for)(user)
    body = json.dumps(TXT2IMG).encode()
    sent = []

    async def receive():
        if not sent:
            sent.append(1)
            return {"type": "http.request", "body": body, "more_body": False}
        await job_appears(user)
        await asyncio.sleep(0.3)
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/sdapi/v1/txt2img", "raw_path": b"/sdapi/v1/txt2img", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"),
                         (b"authorization", f"Bearer {token}".encode())],
             "client": ("127.0.0.1", 5000), "server": ("testserver", 80)}
    await asyncio.wait_for(application(scope, receive, send), timeout=20)

    job = await Job.objects.aget(user=user)
    assert job.state == JobState.CANCELLED
    assert (await sync_to_async(wallet_balance)(user=user))[0] == 100
    assert not any(isinstance(m, dict) and m.get("type") == "http.response.start" for m in sent)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_the_wait_ends_on_the_database_re_read_when_no_event_comes():
    user = await sync_to_async(fast_user)()
    await sync_to_async(give_credits)(user, 100)
    job = await sync_to_async(services.job_submit)(user=user, prompt="x", negative_prompt="", width=64, height=64,
                                                   steps=4, guidance_scale=7, sampler="euler", seed=1, num_images=1)
    await Job.objects.filter(pk=job.pk).aupdate(state=JobState.FAILED)  # behind the services' back: no event
    done = await a1111_generate.wait_until_final(job.pk, timeout=5, recheck=0.2)
    assert done.state == JobState.FAILED


# --- The request, as A1111 spells it -------------------------------------------------------------------

@pytest.mark.django_db
@pytest.mark.parametrize("changes, field, words", [
    ({"sampler_name": "LMS"}, "sampler_name", "not a sampler here"),
    ({"batch_size": 3, "n_iter": 2}, "batch_size", "at most 4"),
    ({"override_settings": {"sd_model_checkpoint": "sdxl-base [abc]"}}, "override_settings", "is offered here"),
    ({"enable_hr": True}, "enable_hr", "hires fix"),
    ({"steps": 0}, "steps", "greater than or equal"),
    ({"width": 64, "height": None}, "body", "both width and height"),
    ({"scheduler": "Exponential"}, "scheduler", "not offered"),
])
def test_a1111_requests_refused_say_which_field_and_make_no_job(changes, field, words):
    user = fast_user()
    give_credits(user, 100)
    response = Client().post("/sdapi/v1/txt2img", {**TXT2IMG, **changes}, content_type="application/json",
                             headers=auth(key_for(user)))
    assert response.status_code == 422, response.content
    problem = response.json()
    assert problem["errors"][0]["loc"][-1] == field and words in problem["detail"]
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_generating_needs_the_generate_scope_and_credits_and_a_get_is_a_405_problem():
    user = fast_user()
    reader = key_for(user, scopes=("read_images",))
    response = Client().post("/sdapi/v1/txt2img", TXT2IMG, content_type="application/json", headers=auth(reader))
    assert response.status_code == 403 and response.json()["type"] == "/api/problems/insufficient-scope"
    response = Client().post("/sdapi/v1/txt2img", TXT2IMG, content_type="application/json",
                             headers=auth(key_for(user)))
    assert response.status_code == 402 and not Job.objects.exists()
    response = Client().get("/sdapi/v1/txt2img", headers=auth(reader))
    assert response.status_code == 405 and response["Content-Type"] == "application/problem+json"


@pytest.mark.django_db
@override_settings(STUDIO_A1111_WAIT_SECONDS=0.01)
def test_img2img_with_a_mask_inpaints_with_a1111s_options_and_the_same_checkpoint_is_accepted():
    user = fast_user()
    give_credits(user, 100)
    mask = PILImage.new("L", (64, 64), 255)
    mask.paste(0, (16, 16, 48, 48))  # black square: with inpainting_mask_invert=1, that is what is repainted
    out = io.BytesIO()
    mask.save(out, format="PNG")
    checkpoint = Client().get("/sdapi/v1/options", headers=auth(key_for(user))).json()["sd_model_checkpoint"]
    body = {**TXT2IMG, "batch_size": 1, "init_images": ["data:image/png;base64," + b64(png("blue", (96, 96)))],
            "mask": b64(out.getvalue()), "inpainting_fill": 2, "inpaint_full_res": False, "mask_blur": 3,
            "denoising_strength": 0.6, "inpainting_mask_invert": 1,
            "override_settings": {"sd_model_checkpoint": checkpoint}}
    response = Client().post("/sdapi/v1/img2img", body, content_type="application/json", headers=auth(key_for(user)))
    assert response.status_code == 504  # no worker here: the wait ends, the job is cancelled
    job = Job.objects.get(user=user)
    assert (job.mode, job.strength, job.masked_content, job.only_masked, job.mask_blur) == (
        "inpaint", 0.6, "latent_noise", False, 3)
    assert (job.width, job.height) == (64, 64)  # the source resized to width x height, A1111's resize_mode 0
    with default_storage.open(job.mask_file.name, "rb") as handle:
        stored_mask = PILImage.open(handle).convert("L")
        assert stored_mask.getpixel((32, 32)) == 255 and stored_mask.getpixel((2, 2)) == 0
    assert job.state == JobState.CANCELLED


@pytest.mark.django_db
def test_img2img_refuses_two_init_images_and_latent_nothing():
    user = fast_user()
    give_credits(user, 100)
    token = key_for(user)
    for changes, field in (({"init_images": [b64(png()), b64(png())]}, "init_images"),
                           ({"init_images": [b64(png())], "inpainting_fill": 3}, "inpainting_fill"),
                           ({"init_images": ["not base64!"]}, "init_images")):
        response = Client().post("/sdapi/v1/img2img", {**TXT2IMG, **changes}, content_type="application/json",
                                 headers=auth(token))
        assert response.status_code == 422 and response.json()["errors"][0]["loc"][-1] == field
    assert not Job.objects.exists()


# --- The key's own jobs: progress, interrupt ----------------------------------------------------------

@pytest.mark.django_db
def test_progress_and_interrupt_see_only_the_keys_own_jobs():
    user = fast_user()
    give_credits(user, 100)
    key, token = accounts.api_key_create(actor=user, name="mine", scopes=["generate"])
    other = key_for(user)
    params = dict(prompt="x", negative_prompt="", width=64, height=64, steps=10, guidance_scale=7, sampler="euler",
                  seed=1, num_images=1)
    running = services.job_submit(user=user, **params, api_key=key)
    queued = services.job_submit(user=user, **params, api_key=key)
    lease = services.job_claim_next(worker_id="w")
    services.job_heartbeat(lease=lease, progress_step=4)

    mine = Client().get("/sdapi/v1/progress?skip_current_image=true", headers=auth(token)).json()
    assert mine["progress"] == 0.4 and mine["state"]["sampling_step"] == 4 and mine["state"]["job_count"] == 2
    assert mine["state"]["job"] == f"task({running.pk})" and mine["textinfo"] == "Step 4 of 10"
    idle = Client().get("/sdapi/v1/progress", headers=auth(other)).json()
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0 and idle["current_image"] is None

    assert Client().post("/sdapi/v1/interrupt", headers=auth(other)).json() == {"interrupted": 0}
    assert Client().post("/sdapi/v1/interrupt", headers=auth(token)).json() == {"interrupted": 2}
    running.refresh_from_db(), queued.refresh_from_db()
    assert running.cancel_requested and queued.state == JobState.CANCELLED
    assert Client().get("/sdapi/v1/progress", headers=auth(token)).json()["state"]["interrupted"] is True


# --- LoRAs, png-info -----------------------------------------------------------------------------------

@pytest.mark.django_db
def test_loras_lists_what_the_key_may_use_in_a1111s_shape():
    user, stranger = fast_user(), fast_user()
    make_lora(user, name="zwx-dog")
    make_lora(stranger, name="not-mine")
    loras = Client().get("/sdapi/v1/loras", headers=auth(key_for(user))).json()
    assert [(lora["name"], lora["alias"]) for lora in loras] == [("zwx-dog", "zwx-dog")]
    assert loras[0]["path"].startswith("lora/") and loras[0]["metadata"]["sshs_model_hash"]


@pytest.mark.django_db
def test_png_info_reads_the_parameters_chunk_and_refuses_a_jpeg():
    token = key_for(fast_user(), scopes=("read_images",))
    infotext = "a red star\nNegative prompt: green\nSteps: 4, Sampler: Euler a, CFG scale: 7, Seed: 9, Size: 64x64"
    body = Client().post("/sdapi/v1/png-info", {"image": b64(png(text={"parameters": infotext, "Software": "x"}))},
                         content_type="application/json", headers=auth(token)).json()
    assert body["info"] == infotext and body["items"] == {"Software": "x"}
    assert body["parameters"]["Seed"] == "9" and body["parameters"]["Negative prompt"] == "green"
    jpeg = io.BytesIO()
    PILImage.new("RGB", (8, 8)).save(jpeg, format="JPEG")
    response = Client().post("/sdapi/v1/png-info", {"image": b64(jpeg.getvalue())}, content_type="application/json",
                             headers=auth(token))
    assert response.status_code == 422 and "PNG files only" in response.json()["detail"]
