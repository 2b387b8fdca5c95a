"""PNG info on Create in Chromium on the live stack: an AUTOMATIC1111 PNG chosen in the file field
fills the form, a ComfyUI PNG dropped on the page fills it again (custom size), a JPEG is refused
with its message, the filled form generates; and without JavaScript the plain form post re-renders
Create prefilled. Screenshots on a desktop and a phone."""

from __future__ import annotations

import pytest

from generation.models import Job
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
from tests.generation import upload_corpus as corpus

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

DESKTOP = {"width": 1280, "height": 900}
A1111_TEXT = (
    "a lighthouse on a cliff at dusk\n"
    "Negative prompt: blurry, lowres\n"
    "Steps: 6, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1234567, Size: 512x768, "
    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Hires upscale: 2, Version: v1.9.4"
)


def a1111_file() -> dict:
    return {"name": "00042-1234567.png", "mimeType": "image/png", "buffer": corpus.png_with_text(parameters=A1111_TEXT)}


def form_value(page, name: str) -> str:
    return page.locator(f"#create-form [name={name}]").input_value()


def drop_file(page, name: str, data: bytes, *, release: bool = True) -> None:
    """Drag a file over the page (and drop it) the way the browser does: DragEvents with a DataTransfer."""
    page.evaluate(
        """([name, bytes, release]) => {
          const file = new File([new Uint8Array(bytes)], name, {type: "image/png"});
          const data = new DataTransfer();
          data.items.add(file);
          const target = document.querySelector("#create-form textarea[name=prompt]");
          const types = release ? ["dragenter", "dragover", "drop"] : ["dragenter", "dragover"];
          for (const type of types) {
            target.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: data}));
          }
        }""",
        [name, list(data), release],
    )


def test_a1111_png_chosen_or_dropped_fills_the_create_form(signed_in, shots):
    session, page, user = signed_in(viewport=DESKTOP)
    page.goto("/create/")
    page.fill("#create-form [name=num_images]", "2")  # not a parameter of the picture: it stays

    page.set_input_files("#png-info-file", a1111_file())
    page.wait_for_selector("#png-info-fields", state="attached")
    assert form_value(page, "prompt") == "a lighthouse on a cliff at dusk"
    assert form_value(page, "negative_prompt") == "blurry, lowres"
    assert form_value(page, "steps") == "6"
    assert form_value(page, "guidance_scale") == "6.5"
    assert form_value(page, "sampler") == "dpmpp_2m_karras"
    assert form_value(page, "seed") == "1234567"
    assert page.locator("#create-form input[name=aspect][value='2:3']").is_checked()
    assert form_value(page, "width") == "" and form_value(page, "height") == ""
    assert form_value(page, "num_images") == "2"
    result = page.locator("#png-info-result")
    assert "The form is filled in" in result.inner_text()
    unused = page.locator(".png-info-unused li").all_inner_texts()
    assert any(item.startswith("Model ") and "studio-demo" in item for item in unused)
    assert any(item.startswith("Hires upscale") for item in unused)
    assert page.locator("[data-png-info-submit]").is_hidden()  # choosing the file posted it
    shots(page, "1-desktop-a1111-filled", full_page=False)

    drop_file(page, "comfy.png", corpus.comfyui_png(), release=False)
    assert page.locator("body.png-info-dragging").count() == 1
    shots(page, "2-desktop-dragging", full_page=False)
    drop_file(page, "comfy.png", corpus.comfyui_png())
    page.wait_for_function("() => document.querySelector('#create-form [name=prompt]').value.includes('fox')")
    assert page.locator("body.png-info-dragging").count() == 0
    assert form_value(page, "prompt") == "a fox in the snow, watercolour"
    assert (form_value(page, "width"), form_value(page, "height")) == ("640", "448")
    assert page.locator("#create-form details.advanced").get_attribute("open") is not None
    assert form_value(page, "seed") == "1234567"  # ComfyUI's 64-bit seed is listed as unusable instead
    assert "Seed" in page.locator(".png-info-unused").inner_text()
    shots(page, "3-desktop-comfyui-dropped")

    # The filled form generates what the picture says.
    page.set_input_files("#png-info-file", a1111_file())
    page.wait_for_function("() => document.querySelector('#create-form [name=prompt]').value.includes('lighthouse')")
    assert form_value(page, "width") == ""
    page.click("#create-form button[type=submit]")
    page.wait_for_selector("[data-job-panel]")
    with orm():
        job = Job.objects.get(user=user)
    assert (job.prompt, job.steps, job.guidance_scale, job.sampler, job.seed) == (
        "a lighthouse on a cliff at dusk", 6, 6.5, "dpmpp_2m_karras", 1234567)
    assert (job.width, job.height, job.num_images) == (512, 768, 2)
    assert session.console_errors == []


def test_a_refused_file_says_why_on_a_phone(signed_in, shots):
    session, page, _user = signed_in(viewport=PHONE)
    page.goto("/create/")
    page.set_input_files("#png-info-file", {"name": "photo.png", "mimeType": "image/png", "buffer": corpus.jpeg_rgb()})
    alert = page.locator("#png-info-result [role=alert]")
    alert.wait_for()
    assert alert.inner_text() == "Parameters are read from PNG files only; this file is a JPEG."
    shots(page, "phone-refused", full_page=False)
    page.set_input_files("#png-info-file", a1111_file())
    page.wait_for_selector("#png-info-fields", state="attached")
    assert form_value(page, "steps") == "6"
    shots(page, "phone-filled")
    refusal = "Failed to load resource: the server responded with a status of 400 (Bad Request)"
    assert [error for error in session.console_errors if error != refusal] == []  # the 400 was the JPEG's


def test_without_javascript_the_form_post_prefills_create(browser, signed_in, shots):
    session, _page, _user = signed_in(viewport=DESKTOP)
    context = browser.new_context(base_url=session.base_url, viewport=DESKTOP, java_script_enabled=False)
    try:
        context.add_cookies(session.context.cookies())
        page = context.new_page()
        page.goto("/create/")
        assert page.locator("[data-png-info-submit]").is_visible()
        page.set_input_files("#png-info-file", a1111_file())
        page.click("[data-png-info-submit]")
        page.wait_for_url("**/create/png-info/")
        assert form_value(page, "prompt") == "a lighthouse on a cliff at dusk"
        assert form_value(page, "steps") == "6" and form_value(page, "sampler") == "dpmpp_2m_karras"
        assert page.locator("#create-form input[name=aspect][value='2:3']").is_checked()
        assert "The form is filled in" in page.locator("#png-info-result").inner_text()
        shots(page, "nojs-prefilled")
    finally:
        context.close()
