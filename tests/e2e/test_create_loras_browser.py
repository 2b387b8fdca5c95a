"""LoRAs on Create in Chromium on the live stack: the picker's "Add a LoRA" / "Remove" rows, a
LoRA chosen with its weight slider, and the job generating with it to success. Screenshot."""

from __future__ import annotations

import pytest

from generation import services
from generation.engine.lora_format import kohya_from_peft
from generation.models import Job, LoRASource
from generation.selectors import model_path
from tests.e2e.browser_fixtures import (  # noqa: F401  (fixtures)
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
