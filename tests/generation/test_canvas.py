"""The canvas on the web side: jobs that keep their source and mask, the canvas form's modes and
sizes, its refusals (4xx with a message, nothing charged, no file left behind), the files of a
canvas job behind the job's permission, and the worker's request."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.urls import reverse
from PIL import Image as PILImage

from billing.selectors import wallet_balance
from billing.services import InsufficientCredits
from generation import services
from generation.engine.model_info import read_model_info
from generation.models import Image, Job, JobMode
from generation.selectors import model_path
from generation.worker import request_for
from tests.factories import job_params, make_user

pytestmark = [pytest.mark.django_db(transaction=True)]
MAX = read_model_info(model_path()).max_width  # the test model's (tests/settings.py builds it)


def png(image: PILImage.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def picture(size=(128, 128), colour=(30, 70, 220)) -> PILImage.Image:
    return PILImage.new("RGB", size, colour)


def mask_of(size=(128, 128), box=(36, 36, 92, 92)) -> PILImage.Image:
    mask = PILImage.new("L", size, 0)
    mask.paste(255, box)
    return mask


def upload(name: str, data: bytes, content_type: str = "image/png"):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data, content_type=content_type)


def canvas_input(**overrides) -> services.CanvasInput:
    fields = {"mode": JobMode.INPAINT, "source_png": png(picture()), "mask_png": png(mask_of())}
    return services.CanvasInput(**{**fields, **overrides})


def stored_files() -> set[str]:
    found = set()
    folders = ["canvas"]
    while folders:
        folder = folders.pop()
        try:
            subfolders, files = default_storage.listdir(folder)
        except FileNotFoundError:
            continue
        folders += [f"{folder}/{sub}" for sub in subfolders]
        found |= {f"{folder}/{name}" for name in files}
    return found


# --- The service --------------------------------------------------------------------------------

def test_a_canvas_job_keeps_its_mode_options_source_and_mask():
    user = make_user(credits=100)
    job = services.job_submit(user=user, **job_params(width=128, height=128),
                              canvas=canvas_input(strength=0.6, mask_blur=8, masked_content="fill"))
    job.refresh_from_db()
    assert (job.mode, job.strength, job.mask_blur, job.masked_content) == ("inpaint", 0.6, 8, "fill")
    with default_storage.open(job.source_file.name, "rb") as source:
        assert source.read() == png(picture())
    with default_storage.open(job.mask_file.name, "rb") as mask:
        assert mask.read() == png(mask_of())
    request = request_for(job)
    assert (request.mode, request.strength, request.mask_blur) == ("inpaint", 0.6, 8)
    assert request.init_image == png(picture()) and request.mask == png(mask_of())


def test_an_outpaint_job_runs_as_inpainting_of_its_padded_canvas():
    user = make_user(credits=100)
    job = services.job_submit(user=user, **job_params(width=192, height=128), canvas=canvas_input(
        mode=JobMode.OUTPAINT, source_png=png(picture((192, 128))), mask_png=png(mask_of((192, 128))),
        outpaint=(0, 0, 64, 0)))
    job.refresh_from_db()
    assert (job.mode, job.outpaint_right) == ("outpaint", 64)
    assert request_for(job).mode == "inpaint"


def test_a_refused_canvas_job_leaves_no_files_and_no_charge():
    user = make_user(credits=1)
    before = stored_files()
    with pytest.raises(InsufficientCredits):
        services.job_submit(user=user, **job_params(width=128, height=128, steps=150, num_images=4),
                            canvas=canvas_input())
    assert Job.objects.count() == 0
    assert stored_files() == before
    assert wallet_balance(user=user) == (1, 0)


def test_deleting_a_finished_canvas_job_deletes_its_source_and_mask():
    user = make_user(credits=100)
    job = services.job_submit(user=user, **job_params(width=128, height=128), canvas=canvas_input())
    services.job_cancel(job=job)
    names = {job.source_file.name, job.mask_file.name}
    services.job_delete(job=Job.objects.get(pk=job.pk))
    assert not any(default_storage.exists(name) for name in names)


# --- The source and mask files of a job ----------------------------------------------------------

def test_a_jobs_source_and_mask_are_served_only_to_who_may_see_the_job(client):
    owner, stranger = make_user(credits=100), make_user()
    job = services.job_submit(user=owner, **job_params(width=128, height=128), canvas=canvas_input())
    client.force_login(owner)
    source = client.get(reverse("generation:job_source", args=[job.pk]))
    assert source.status_code == 200 and source["Content-Type"] == "image/png"
    assert source["X-Content-Type-Options"] == "nosniff"
    assert b"".join(source.streaming_content) == png(picture())
    assert client.get(reverse("generation:job_mask", args=[job.pk])).status_code == 200
    client.force_login(stranger)
    assert client.get(reverse("generation:job_source", args=[job.pk])).status_code == 404
    assert client.get(reverse("generation:job_mask", args=[job.pk])).status_code == 404


def test_a_text_to_image_job_has_no_source(client):
    owner = make_user(credits=100)
    job = services.job_submit(user=owner, **job_params())
    client.force_login(owner)
    assert client.get(reverse("generation:job_source", args=[job.pk])).status_code == 404


# --- The canvas form and page --------------------------------------------------------------------

def canvas_post(**overrides) -> dict:
    data = {
        "prompt": "a red circle in the centre on a blue background", "negative_prompt": "", "steps": 8,
        "guidance_scale": 3, "sampler": "euler", "seed": 1, "num_images": 1, "mode": "inpaint",
        "strength": 0.8, "mask_blur": 4, "masked_content": "original", "only_masked_padding": 32,
        "outpaint_left": 0, "outpaint_top": 0, "outpaint_right": 0, "outpaint_bottom": 0,
        "source": upload("source.png", png(picture())), "mask": upload("mask.png", png(mask_of())),
    }
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def test_posting_an_inpaint_makes_a_job_at_the_sources_size(client_with_credits):
    response = client_with_credits.post(reverse("generation:canvas"), canvas_post())
    job = Job.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("generation:job_detail", args=[job.pk])
    assert (job.mode, job.width, job.height, job.strength) == ("inpaint", 128, 128, 0.8)
    with default_storage.open(job.mask_file.name, "rb") as mask:
        assert np.array_equal(np.asarray(PILImage.open(mask).convert("L")) > 127, np.asarray(mask_of()) > 127)


def test_only_masked_generates_at_the_models_native_size(client_with_credits):
    big = picture((512, 384))
    client_with_credits.post(reverse("generation:canvas"), canvas_post(
        only_masked="on", source=upload("big.png", png(big)), mask=upload("m.png", png(mask_of((512, 384))))))
    job = Job.objects.get()
    info = read_model_info(model_path())
    assert (job.width, job.height, job.only_masked) == (info.native_width, info.native_height, True)


def test_image_to_image_scales_a_large_source_down_to_the_models_maximum(client_with_credits):
    info = read_model_info(model_path())
    wide = picture((info.max_width * 2, info.max_width))
    client_with_credits.post(reverse("generation:canvas"), canvas_post(
        mode="img2img", mask=None, source=upload("big.jpg", _jpeg(wide), "image/jpeg")))
    job = Job.objects.get()
    expected = (info.max_width, info.max_width // 2)
    assert (job.mode, job.width, job.height) == ("img2img", *expected)
    with default_storage.open(job.source_file.name, "rb") as source:
        assert PILImage.open(source).size == expected


def test_outpainting_pads_the_source_and_masks_the_new_area(client_with_credits):
    client_with_credits.post(reverse("generation:canvas"), canvas_post(mode="outpaint", mask=None, outpaint_right=64))
    job = Job.objects.get()
    assert (job.mode, job.width, job.height, job.outpaint_right) == ("outpaint", 192, 128, 64)
    with default_storage.open(job.mask_file.name, "rb") as mask:
        values = np.asarray(PILImage.open(mask).convert("L"))
    assert (values[:, :128] == 0).all() and (values[:, 128:] == 255).all()


def test_a_source_from_my_gallery_is_used_and_linked(client_with_credits):
    image = _stored_image(client_with_credits.user)
    client_with_credits.post(reverse("generation:canvas"), canvas_post(source=None, source_image=str(image.pk)))
    job = Job.objects.get(mode="inpaint")
    assert job.source_image == image


def test_someone_elses_image_is_not_a_source(client_with_credits):
    image = _stored_image(make_user(credits=100))
    response = client_with_credits.post(reverse("generation:canvas"), canvas_post(source=None, source_image=str(image.pk)))
    assert response.status_code == 400
    assert b"No such image" in response.content
    assert not Job.objects.filter(mode="inpaint").exists()


@pytest.mark.parametrize(("overrides", "message"), [
    ({"mask": None}, b"mask is empty"),
    ({"mask": upload("m.png", png(mask_of(box=(0, 0, 0, 0))))}, b"is empty"),
    ({"mask": upload("m.png", png(mask_of((64, 64))))}, b"must match the source"),
    ({"source": None}, b"Choose an image to start from"),
    ({"source": upload("x.png", b"<html><script>alert(1)</script></html>")}, None),
    ({"mode": "outpaint", "mask": None}, b"at least one side"),
    ({"mode": "outpaint", "mask": None, "outpaint_right": 64, "source": upload("w.png", png(picture((MAX, 128))))},
     b"maximum"),
    ({"strength": 0.05}, b"raise the strength"),
    ({"source": upload("big.png", png(picture((MAX + 8, 128)))), "mask": upload("m.png", png(mask_of((MAX + 8, 128))))},
     b"Only masked"),
])
def test_bad_canvas_input_is_a_400_with_a_message_and_charges_nothing(client_with_credits, overrides, message):
    before = wallet_balance(user=client_with_credits.user)
    response = client_with_credits.post(reverse("generation:canvas"), canvas_post(**overrides))
    assert response.status_code == 400
    if message:
        assert message in response.content, response.content.decode()[-2000:]
    assert not Job.objects.exists()
    assert wallet_balance(user=client_with_credits.user) == before


def test_without_credits_the_canvas_answers_402(client):
    user = make_user(credits=1)
    client.force_login(user)
    response = client.post(reverse("generation:canvas"), canvas_post(num_images=4, steps=150))
    assert response.status_code == 402
    assert not Job.objects.exists()


def _jpeg(image: PILImage.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _stored_image(user) -> Image:
    job = services.job_submit(user=user, **job_params(width=128, height=128))
    services.job_cancel(job=job)
    name = default_storage.save("images/test/source.png", ContentFile(png(picture())))
    return Image.objects.create(job=job, owner=user, index=0, seed=1, width=128, height=128, file=name,
                                infotext="a test")
