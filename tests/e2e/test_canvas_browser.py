"""The canvas in Chromium on the live stack (daphne, a worker with the demo model): upload a picture,
paint a mask with mouse strokes, change the brush size, undo and redo, generate; the posted mask is
the strokes left, pixels far from the mask are the source's exactly, the result is in the gallery.
Then the result opens in the canvas again and is outpainted 128 px to the right. On a phone-sized
touch screen the mask is drawn with a finger and a two-finger pinch zooms without painting.
Screenshots on a desktop and a phone."""

from __future__ import annotations

import io
import re
import time

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image as PILImage

from generation.engine.inpainting import load_mask
from generation.models import Image, Job, JobState
from tests.e2e.browser_fixtures import (  # noqa: F401  (fixtures)
    CHROMIUM_ARGS,
    PHONE,
    _fresh_redis_state,
    _PlaywrightLoop,
    browser,
    browser_session_factory,
    live_stack,
    orm,
    shared_live_stack,
    shots,
    signed_in,
)

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

DESKTOP = {"width": 1280, "height": 900}
EDITOR = "[data-mask-editor]"
SIZE = 256
FAR = 24  # pixels beyond the mask (its blur is 4) that must keep the source exactly

# Image pixels -> page coordinates, through the editor's own view (zoom and pan).
TO_CLIENT = """([x, y]) => {
  const editor = document.querySelector('[data-mask-editor]').editor;
  const rect = editor.canvas.getBoundingClientRect();
  return [rect.left + editor.view.x + x * editor.view.scale, rect.top + editor.view.y + y * editor.view.scale];
}"""
VIEW = "() => { const v = document.querySelector('[data-mask-editor]').editor.view; return [v.scale, v.x, v.y]; }"
PAINTED = """() => {
  const mask = document.querySelector('[data-mask-editor]').editor.layers.mask;
  const data = mask.getContext('2d').getImageData(0, 0, mask.width, mask.height).data;
  let count = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i] >= 128) count++;
  return count;
}"""


def source_png() -> bytes:
    """A picture whose every pixel differs from its neighbours' (gradients and a checker), so
    "the result keeps the source" compares something."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    pixels = np.stack([40 + x * 150 // SIZE, 60 + y * 120 // SIZE, 160 + ((x // 16 + y // 16) % 2) * 60], axis=-1)
    buffer = io.BytesIO()
    PILImage.fromarray(pixels.astype(np.uint8), "RGB").save(buffer, "PNG")
    return buffer.getvalue()


def drag(page, points: list[tuple[float, float]]) -> None:
    """A mouse stroke through image-pixel points."""
    client = [page.evaluate(TO_CLIENT, list(point)) for point in points]
    page.mouse.move(*client[0])
    page.mouse.down()
    for point in client[1:]:
        page.mouse.move(*point, steps=8)
    page.mouse.up()


def set_range(page, selector: str, value: int) -> None:
    page.locator(selector).evaluate(
        "(input, value) => { input.value = value; input.dispatchEvent(new Event('input', {bubbles: true})); }", value)


def wait_for_job(job_id: str, timeout: float = 180) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with orm():
            job = Job.objects.get(pk=job_id)
        if job.state in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED):
            return job
        time.sleep(0.5)
    raise TimeoutError(f"job {job_id} still {job.state} after {timeout}s")


def wait_for_result_image(page) -> None:
    """The job page's result image loaded (it is lazy: a screenshot must not show an empty frame)."""
    page.locator("[data-result-image]").first.scroll_into_view_if_needed()
    page.wait_for_function("() => [...document.querySelectorAll('[data-result-image]')]"
                           ".some((img) => img.complete && img.naturalWidth > 0)")


def submitted_job_id(page) -> str:
    page.wait_for_url(re.compile(r".*/jobs/[0-9a-f-]{36}/$"))
    return page.url.rstrip("/").rsplit("/", 1)[1]


def png_array(data: bytes, mode: str = "RGB") -> np.ndarray:
    return np.asarray(PILImage.open(io.BytesIO(data)).convert(mode))


def distance_to_segment(shape, start, end) -> np.ndarray:
    """Each pixel centre's distance to the segment start-end (image pixels)."""
    y, x = np.mgrid[0:shape[0], 0:shape[1]] + 0.5
    (x0, y0), (x1, y1) = start, end
    length = max(1e-9, (x1 - x0) ** 2 + (y1 - y0) ** 2)
    t = np.clip(((x - x0) * (x1 - x0) + (y - y0) * (y1 - y0)) / length, 0, 1)
    return np.hypot(x - (x0 + t * (x1 - x0)), y - (y0 + t * (y1 - y0)))


def result_pixels(job: Job) -> np.ndarray:
    with orm():
        image = Image.objects.get(job=job)
        with default_storage.open(image.file.name, "rb") as handle:
            return png_array(handle.read())


def test_paint_undo_generate_then_outpaint_the_result(signed_in, shots, tmp_path):
    session, page, _ = signed_in(credits=500, viewport=DESKTOP)
    source_file = tmp_path / "harbour.png"
    source_file.write_bytes(source_png())

    page.goto("/")
    page.click("nav >> text=Canvas")
    page.wait_for_url("**/canvas/")
    shots(page, "1-desktop-empty", full_page=False)
    page.set_input_files("input[name=source]", str(source_file))
    page.locator(f"{EDITOR}[data-loaded]").wait_for()
    page.locator("[data-generation-size]", has_text=f"Generates {SIZE}×{SIZE}.").wait_for()
    page.locator("#cost-quote [data-cost]").wait_for()  # priced by the picture's size
    page.fill("textarea[name=prompt]", "a red circle")

    # Stroke 1 with a 30 px brush; stroke 2 bigger ("]" three times); undo, redo, undo.
    set_range(page, "[data-setting=size]", 30)
    set_range(page, "[data-setting=hardness]", 100)
    stroke = ((60, 128), (190, 128))
    drag(page, list(stroke))
    after_one = page.evaluate(PAINTED)
    for _ in range(3):
        page.keyboard.press("]")
    size_two = page.evaluate("() => document.querySelector('[data-mask-editor]').editor.brush.size")
    assert size_two > 30 and page.locator("[data-setting-value=size]").inner_text() == f"{size_two} px"
    drag(page, [(128, 40), (128, 60)])
    after_two = page.evaluate(PAINTED)
    assert 0 < after_one < after_two
    shots(page, "2-desktop-two-strokes", full_page=False)
    page.keyboard.press("Control+z")
    assert page.evaluate(PAINTED) == after_one
    page.keyboard.press("Control+Shift+z")
    assert page.evaluate(PAINTED) == after_two
    page.click("[data-action=undo]")
    assert page.evaluate(PAINTED) == after_one
    assert page.locator("[data-action=redo]").is_enabled()
    shots(page, "3-desktop-after-undo", full_page=False)

    # The wheel zooms around the pointer, space-drag pans; neither paints.
    before = page.evaluate(VIEW)
    over = page.evaluate(TO_CLIENT, [128, 200])
    page.mouse.move(*over)
    page.mouse.wheel(0, -300)
    page.wait_for_function(f"() => document.querySelector('{EDITOR}').editor.view.scale > {before[0] * 1.2}")
    zoomed = page.evaluate(VIEW)
    assert page.evaluate(TO_CLIENT, [128, 200]) == pytest.approx(over, abs=1)  # the point under the pointer stays
    page.keyboard.down("Space")
    page.mouse.down()
    page.mouse.move(over[0] + 80, over[1] + 40, steps=5)
    page.mouse.up()
    page.keyboard.up("Space")
    panned = page.evaluate(VIEW)
    assert panned[0] == zoomed[0] and panned[1:] == pytest.approx([zoomed[1] + 80, zoomed[2] + 40], abs=1)
    assert page.evaluate(PAINTED) == after_one
    page.click("[data-action=fit]")

    page.click("button:has-text('Generate')")
    job_id = submitted_job_id(page)
    job = wait_for_job(job_id)
    assert job.state == JobState.SUCCEEDED, job.error
    assert (job.mode, job.width, job.height) == ("inpaint", SIZE, SIZE)
    wait_for_result_image(page)
    shots(page, "4-desktop-job-done")

    # The posted mask is the first stroke: white along it, black beyond the brush, nothing of stroke 2.
    response = page.request.get(f"/jobs/{job_id}/mask.png")
    assert response.status == 200
    assert PILImage.open(io.BytesIO(response.body())).mode in ("L", "RGB")  # no alpha channel to misread
    mask = load_mask(response.body(), (SIZE, SIZE)) > 0.5  # read as the engine reads it
    distance = distance_to_segment(mask.shape, *stroke)
    missing = np.argwhere((distance <= 12) & ~mask)
    assert not len(missing), f"unpainted along the stroke (row, col): {missing[:10].tolist()} of {len(missing)}"
    assert not mask[distance >= 18].any()
    source = png_array(source_png())
    result = result_pixels(job)
    rows, cols = np.nonzero(mask)
    far = np.ones(mask.shape, bool)
    far[max(0, rows.min() - FAR): rows.max() + FAR + 1, max(0, cols.min() - FAR): cols.max() + FAR + 1] = False
    assert far.sum() > SIZE * SIZE // 2
    assert np.array_equal(result[far], source[far])
    assert not np.array_equal(result[mask], source[mask])  # and the masked area was repainted

    # The result is in the gallery; its page opens it in the canvas again, brush settings remembered.
    with orm():
        result_image = Image.objects.get(job_id=job_id)
    page.goto("/gallery/")
    page.locator(f"#image-{result_image.pk}").wait_for()
    page.goto(f"/images/{result_image.pk}/")
    page.click("text=Open in canvas")
    page.wait_for_url(f"**/canvas/?image={result_image.pk}")
    page.locator(f"{EDITOR}[data-loaded]").wait_for()
    assert page.locator("[data-setting-value=size]").inner_text() == f"{size_two} px"
    assert page.input_value("textarea[name=prompt]") == "a red circle"

    # Outpaint 128 px to the right: the preview grows, the quote follows the padded size.
    page.click(".canvas-modes >> text=Outpaint")
    assert page.locator("[data-mode=outpaint]").count() == 1
    assert page.locator("[data-paint-tools]").first.is_hidden()
    page.fill("input[name=outpaint_right]", "128")
    page.locator("[data-generation-size]", has_text=f"Generates {SIZE + 128}×{SIZE}.").wait_for()
    page.wait_for_function("() => document.querySelector('[data-mask-editor]').editor.padding.right === 128")
    page.fill("textarea[name=prompt]", "the pattern goes on")
    shots(page, "5-desktop-outpaint-preview", full_page=False)
    page.click("button:has-text('Generate')")
    outpaint_id = submitted_job_id(page)
    outpaint = wait_for_job(outpaint_id)
    assert outpaint.state == JobState.SUCCEEDED
    assert (outpaint.mode, outpaint.width, outpaint.height) == ("outpaint", SIZE + 128, SIZE)
    extended = result_pixels(outpaint)
    assert extended.shape == (SIZE, SIZE + 128, 3)
    assert np.array_equal(extended[:, : SIZE - FAR], result[:, : SIZE - FAR])  # the old picture, kept
    wait_for_result_image(page)
    shots(page, "6-desktop-outpaint-done")
    assert not session.console_errors, session.console_errors


def touch(cdp, kind: str, points: list[tuple[float, float]]) -> None:
    cdp.send("Input.dispatchTouchEvent", {
        "type": kind, "touchPoints": [{"x": x, "y": y, "id": n, "radiusX": 4, "radiusY": 4, "force": 1}
                                      for n, (x, y) in enumerate(points)]})


def test_draw_with_a_finger_on_a_phone(signed_in, browser, live_stack, shots, tmp_path):
    session, _, _ = signed_in(credits=200, viewport=PHONE)
    phone_context = browser.new_context(base_url=live_stack.base_url, viewport=PHONE, is_mobile=True,
                                        has_touch=True, device_scale_factor=2)
    try:
        phone_context.add_cookies(session.context.cookies())
        phone = phone_context.new_page()
        errors: list[str] = []
        phone.on("pageerror", lambda exc: errors.append(f"{phone.url}: {exc} {exc.stack}"))
        source_file = tmp_path / "harbour.png"
        source_file.write_bytes(source_png())
        phone.goto("/canvas/")
        phone.set_input_files("input[name=source]", str(source_file))
        phone.locator(f"{EDITOR}[data-loaded]").wait_for()
        phone.locator(EDITOR).scroll_into_view_if_needed()
        phone.fill("textarea[name=prompt]", "a red circle")
        phone.locator("[data-mask-editor] canvas").scroll_into_view_if_needed()
        cdp = phone_context.new_cdp_session(phone)

        # A two-finger pinch zooms in and paints nothing.
        scale = phone.evaluate("() => document.querySelector('[data-mask-editor]').editor.view.scale")
        centre = phone.evaluate(TO_CLIENT, [128, 128])
        touch(cdp, "touchStart", [(centre[0] - 20, centre[1]), (centre[0] + 20, centre[1])])
        for step in range(1, 9):
            touch(cdp, "touchMove", [(centre[0] - 20 - 8 * step, centre[1]), (centre[0] + 20 + 8 * step, centre[1])])
        touch(cdp, "touchEnd", [])
        assert phone.evaluate("() => document.querySelector('[data-mask-editor]').editor.view.scale") > scale * 1.5
        assert phone.evaluate(PAINTED) == 0
        phone.click("[data-action=fit]")

        # One finger paints a stroke across the middle.
        set_range(phone, "[data-setting=size]", 24)
        set_range(phone, "[data-setting=hardness]", 100)
        stroke = ((50, 140), (200, 140))
        start, end = (phone.evaluate(TO_CLIENT, list(point)) for point in stroke)
        touch(cdp, "touchStart", [tuple(start)])
        for step in range(1, 13):
            t = step / 12
            touch(cdp, "touchMove", [(start[0] + (end[0] - start[0]) * t, start[1] + (end[1] - start[1]) * t)])
        touch(cdp, "touchEnd", [])
        assert phone.evaluate(PAINTED) > 0
        shots(phone, "7-phone-touch-stroke", full_page=False)
        shots(phone, "8-phone-page")

        phone.click("button:has-text('Generate')")
        job_id = submitted_job_id(phone)
        job = wait_for_job(job_id)
        assert job.state == JobState.SUCCEEDED
        mask = load_mask(phone.request.get(f"/jobs/{job_id}/mask.png").body(), (SIZE, SIZE)) > 0.5
        distance = distance_to_segment(mask.shape, *stroke)
        assert mask[distance <= 8].all() and not mask[distance >= 14].any()
        wait_for_result_image(phone)
        shots(phone, "9-phone-job-done")
        assert not errors, errors
    finally:
        _PlaywrightLoop.resume()
        phone_context.close()


def test_a_refused_post_keeps_the_picture_and_the_mask(signed_in, shots):
    """Opened from my gallery without the credits to pay: the page comes back with the reason, the
    picture and the mask painted on it, ready to try again."""
    session, page, user = signed_in(credits=0, viewport=DESKTOP)
    with orm():
        job = Job.objects.create(user=user, state=JobState.SUCCEEDED, prompt="a harbour", width=SIZE, height=SIZE,
                                 steps=4, guidance_scale=7, sampler="euler", seed=1, num_images=1, model_name="test",
                                 cost=1)
        name = default_storage.save(f"images/{user.pk}/{job.pk}/0.png", ContentFile(source_png()))
        image = Image.objects.create(job=job, owner=user, index=0, seed=1, width=SIZE, height=SIZE, file=name,
                                     thumbnail=name, infotext="x")

    page.goto(f"/canvas/?image={image.pk}")
    page.locator(f"{EDITOR}[data-loaded]").wait_for()
    assert page.input_value("textarea[name=prompt]") == "a harbour"
    page.locator("#cost-quote .cost-quote-warning", has_text="Not enough credits").wait_for()
    set_range(page, "[data-setting=size]", 40)
    drag(page, [(80, 80), (170, 170)])
    painted = page.evaluate(PAINTED)
    page.click("button:has-text('Generate')")
    page.locator(f"form[data-refused] {EDITOR}[data-loaded]").wait_for()
    assert "Not enough credits" in page.locator("div.form-errors").inner_text()
    page.wait_for_function(f"() => ({PAINTED})() === {painted}")
    shots(page, "10-desktop-refused-keeps-mask", full_page=False)
    with orm():
        assert not Job.objects.filter(mode="inpaint").exists()
    errors = [error for error in session.console_errors if "status of 402" not in error]  # the refusal itself
    assert not errors, errors


def pen_stroke(cdp, start, end, force: float) -> None:
    """A pen stroke through Chromium's input pipeline (pointerType "pen", with pressure)."""
    def event(kind, x, y, buttons):
        cdp.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "buttons": buttons,
                                              "clickCount": 1, "pointerType": "pen", "force": force})
    event("mouseMoved", *start, 0)
    event("mousePressed", *start, 1)
    for step in range(1, 13):
        t = step / 12
        event("mouseMoved", start[0] + (end[0] - start[0]) * t, start[1] + (end[1] - start[1]) * t, 1)
    event("mouseReleased", *end, 0)


def test_pen_pressure_sets_the_width_and_the_page_reads_in_the_dark(signed_in, shots, tmp_path):
    session, page, _ = signed_in(viewport=DESKTOP, color_scheme="dark")
    source_file = tmp_path / "harbour.png"
    source_file.write_bytes(source_png())
    page.goto("/canvas/")
    page.set_input_files("input[name=source]", str(source_file))
    page.locator(f"{EDITOR}[data-loaded]").wait_for()
    set_range(page, "[data-setting=size]", 40)
    set_range(page, "[data-setting=hardness]", 100)
    cdp = session.context.new_cdp_session(page)
    client = [page.evaluate(TO_CLIENT, point) for point in ([40, 60], [216, 60], [40, 190], [216, 190])]
    pen_stroke(cdp, client[0], client[1], force=1.0)
    firm = page.evaluate(PAINTED)
    pen_stroke(cdp, client[2], client[3], force=0.25)
    light = page.evaluate(PAINTED) - firm
    assert 0 < light < firm * 0.5  # a quarter of the pressure: a line about a quarter as wide
    shots(page, "11-desktop-dark-pen-pressure", full_page=False)
    assert not session.console_errors, session.console_errors
