"""Fine-tuning in Chromium on the live stack (daphne, a worker with the test model): start a training
through the web page (three tiny pictures, the quick preset cut to a few steps at 64 px through
Advanced), watch its loss curve and samples arrive over the websocket, see the LoRA appear in the
library, then generate with it on Create (its "Use on Create" link preselects it). Screenshots of every page on the way.
Also the Create page's LoRA picker on its own: "Add a LoRA" / "Remove" rows, a LoRA chosen with its weight
slider, and the job generating with it to success. Both tests share the module's live stack."""

from __future__ import annotations

import io
import re
import time

import pytest
from PIL import Image as PILImage
from PIL import ImageDraw

from generation import services
from generation.engine.lora_format import kohya_from_peft
from generation.models import Job, JobKind, JobState, LoRA, LoRASource
from generation.selectors import model_path
from tests.e2e.browser_fixtures import (  # noqa: F401  (fixtures)
    PHONE,
    _fresh_redis_state,
    browser,
    browser_session_factory,
    live_stack,
    orm,
    shared_live_stack,
    shots,
    signed_in,
)
from tests.engine.test_lora import peft_states

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

DESKTOP = {"width": 1280, "height": 900}
STEPS = 12


def picture(number: int) -> bytes:
    """A hexagon-ish shape on a plain background, a little different each time."""
    image = PILImage.new("RGB", (64, 64), (30 + 40 * number, 60, 120))
    centre, radius = 32 + 4 * (number - 1), 18
    points = [(centre + radius * dx, 32 + radius * dy) for dx, dy in
              ((1, 0), (0.5, 0.87), (-0.5, 0.87), (-1, 0), (-0.5, -0.87), (0.5, -0.87))]
    ImageDraw.Draw(image).polygon(points, fill=(240, 200, 40))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def wait_for_state(job_id, states, timeout: float) -> Job:
    deadline = time.monotonic() + timeout
    while True:
        with orm():
            job = Job.objects.get(pk=job_id)
        if job.state in states or time.monotonic() > deadline:
            return job
        time.sleep(0.25)


def test_train_watch_and_use_a_lora(signed_in, shots):
    session, page, user = signed_in(credits=500, viewport=DESKTOP)

    # Step 1: three pictures and the instance prompt.
    page.goto("/trainings/new/")
    page.fill("input[name=instance_prompt]", "a photo of zwx hexagon")
    page.set_input_files("input[name=images]", [
        {"name": f"hexagon-{number}.png", "mimeType": "image/png", "buffer": picture(number)}
        for number in (1, 2, 3)])
    shots(page, "1-pictures")
    page.click("text=Next: captions and settings")

    # Step 2: captions prefilled, the quick preset cut down through Advanced, the cost shown live.
    page.wait_for_url("**/trainings/new/settings/")
    captions = page.locator("textarea[name^=caption_]")
    assert captions.count() == 3 and captions.nth(0).input_value() == "a photo of zwx hexagon"
    captions.nth(1).fill("a photo of zwx hexagon, slightly to the right")
    page.fill("input[name=name]", "zwx-hexagon")
    page.check("input[name=preset][value=quick]")
    page.click("details[data-advanced] summary")
    quote = page.locator("[data-training-quote] [data-cost]")
    quote.wait_for()
    quick_cost = int(quote.get_attribute("data-cost"))
    page.fill("input[name=steps]", str(STEPS))
    page.fill("input[name=resolution]", "64")
    page.locator("input[name=resolution]").blur()
    page.wait_for_function(f"(before) => Number(document.querySelector('[data-training-quote] [data-cost]')"
                           f"?.dataset.cost) < before", arg=quick_cost)
    shots(page, "2-settings")
    page.check("input[name=method][value=dreambooth]")  # its fieldset: class prompts one per line, prior weight
    page.locator("textarea[name=class_prompt]").fill("a photo of a hexagon\na photo of a circle")
    assert page.locator("input[name=prior_loss_weight]").is_visible()
    shots(page, "2b-settings-dreambooth")
    page.check("input[name=method][value=lora]")
    page.click("button:has-text('Start training')")

    # The training page: progress, the loss curve and samples arrive over the websocket.
    page.wait_for_url(re.compile(r".*/trainings/[0-9a-f-]{36}/$"))
    job_id = page.url.rstrip("/").rsplit("/", 1)[1]
    with orm():
        job = Job.objects.select_related("training").get(pk=job_id)
        assert (job.kind, job.steps, job.width, job.training.name) == (JobKind.TRAIN, STEPS, 64, "zwx-hexagon")
        assert [image.caption for image in job.training.images.order_by("index")][1].endswith("to the right")
    page.wait_for_function("() => document.querySelectorAll('[data-loss-points] i').length >= 2", timeout=120_000)
    page.wait_for_selector("[data-sample-image]", timeout=120_000)
    live_points = page.evaluate("() => document.querySelectorAll('[data-loss-points] i').length")
    drawn = page.locator("[data-loss-line]").get_attribute("points").split()
    assert len(drawn) >= live_points >= 2  # the module redrew the curve from the pushed points
    shots(page, "3-training-live")

    job = wait_for_state(job_id, {JobState.SUCCEEDED, JobState.FAILED}, timeout=180)
    assert job.state == JobState.SUCCEEDED, job.error
    page.wait_for_selector("[data-lora-link]", timeout=20_000)  # the final state, pushed
    assert page.locator("[data-state]").first.get_attribute("data-state") == "succeeded"
    page.locator("[data-sample-image]").last.scroll_into_view_if_needed()
    page.wait_for_function("() => [...document.querySelectorAll('[data-sample-image]')]"
                           ".every((img) => img.complete && img.naturalWidth > 0)")
    shots(page, "4-training-done")
    page.set_viewport_size(PHONE)
    shots(page, "4b-training-done-phone")
    page.set_viewport_size(DESKTOP)

    page.goto("/trainings/")
    assert "Succeeded" in page.locator("[data-trainings]").text_content()
    shots(page, "4c-trainings")

    # The library lists it; Use on Create.
    page.goto("/loras/")
    row = page.locator("tr[data-lora='zwx-hexagon']")
    row.wait_for()
    with orm():
        lora = LoRA.objects.get(owner=user, name="zwx-hexagon")
    assert lora.short_hash in row.inner_text() and "Trained here" in row.inner_text()
    shots(page, "5-loras")

    page.goto(f"/loras/{lora.pk}/")
    shots(page, "6-lora")
    page.click("[data-use-lora]")
    page.wait_for_url(f"**/create/?lora={lora.pk}")

    # Create: the picker comes preselected with it; generate with it.
    assert page.locator("select[name=lora]").first.input_value() == str(lora.pk)
    page.fill("textarea[name=prompt]", "a photo of zwx hexagon")
    page.fill("input[name=steps]", "4")
    page.click("#create-form button[type=submit]")
    page.wait_for_selector("[data-job-panel] [data-state='succeeded']", timeout=120_000)
    with orm():
        made = Job.objects.filter(user=user, kind=JobKind.GENERATE).get()
        infotext = made.images.get().infotext
    assert made.state == JobState.SUCCEEDED
    assert [(item["name"], item["sha256"]) for item in made.loras] == [("zwx-hexagon", lora.sha256)]
    assert "Lora hashes" in infotext and "zwx-hexagon" in infotext, infotext
    shots(page, "7-create-with-lora")
    assert not session.console_errors, session.console_errors


def test_a_lora_chosen_with_its_slider_generates(signed_in, shots):
    session, page, user = signed_in()
    with orm():
        unet, te = peft_states(model_path(), rank=4, seed=1, scale=0.3)
        lora = services.lora_create_from_bytes(owner=user, name="zwx-browser", data=kohya_from_peft(unet, te, alpha=2),
                                               source=LoRASource.IMPORTED, base_model="studio-tiny")
    page.goto("/create/")
    picker = page.locator("[data-lora-picker]")
    assert picker.locator("[data-lora-row]").count() == 1  # the script dropped nothing but kept one row
    picker.locator("[data-lora-add]").click()
    assert picker.locator("[data-lora-row]").count() == 2
    picker.locator("[data-lora-row]").nth(1).locator("[data-lora-remove]").click()
    assert picker.locator("[data-lora-row]").count() == 1
    picker.locator("select[name=lora]").select_option(str(lora.pk))
    picker.locator("input[name=lora_weight]").fill("0.75")
    assert picker.locator("[data-lora-weight-value]").inner_text() == "0.75"
    page.fill("#id_prompt", "a red circle")
    page.locator("details.advanced summary").click()
    page.fill("#id_width", "64")
    page.fill("#id_height", "64")
    page.fill("#id_steps", "2")
    shots(page, "1-lora-chosen")
    page.click("#create-form button[type=submit]")
    page.wait_for_selector("[data-job-panel]")
    with orm():
        job = Job.objects.get(user=user)
    assert job.loras == [{"id": str(lora.pk), "name": "zwx-browser", "sha256": lora.sha256, "weight": 0.75}]
    assert job.prompt == "a red circle <lora:zwx-browser:0.75>"
    page.wait_for_selector(f'#job-{job.pk} [data-state="succeeded"]', timeout=90_000)
    shots(page, "2-lora-job-succeeded")
    assert session.console_errors == []
