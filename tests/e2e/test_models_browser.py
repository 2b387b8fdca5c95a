"""The model picker on Create in Chromium on the live stack: picking another model puts its
defaults into the form and its price into the quote, the job runs on it, and Create remembers it.
Screenshots on a desktop and a phone."""

from __future__ import annotations

import shutil
from decimal import Decimal

import pytest

from generation import services
from generation.models import Job, JobState
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

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

DESKTOP = {"width": 1280, "height": 900}


@pytest.fixture
def two_models(tmp_path):
    folder = tmp_path / "detailed"
    shutil.copytree(model_path(), folder)
    with orm():
        services.builtin_model()
        return services.model_register(
            name="detailed", title="Detailed (slow)", path=str(folder), default_steps=7, default_guidance_scale=3.5,
            default_sampler="ddim", price_multiplier=Decimal("100"),
            description="Fewer steps by default; a hundred times the price.")


def form_value(page, name: str) -> str:
    return page.locator(f"#create-form [name={name}]").input_value()


def quoted_cost(page) -> str:
    return page.locator("#cost-quote-slot [data-cost]").inner_text()


def test_picking_a_model_brings_its_defaults_and_price_and_the_job_runs_on_it(signed_in, shots, two_models):
    session, page, user = signed_in(viewport=DESKTOP)
    page.goto("/create/")
    picker = page.locator("#create-form select[name=model]")
    assert picker.locator("option").count() == 2 and "Detailed (slow)" in picker.locator("option").all_inner_texts()
    page.fill("#create-form [name=steps]", "20")
    page.wait_for_selector("#cost-quote-slot [data-cost]")
    before = quoted_cost(page)
    shots(page, "1-desktop-default-model", full_page=False)

    picker.select_option("detailed")
    assert (form_value(page, "steps"), form_value(page, "guidance_scale"), form_value(page, "sampler")) == (
        "7", "3.5", "ddim")
    assert "a hundred times the price" in page.locator("[data-model-description]").inner_text()
    page.wait_for_function("(before) => document.querySelector('#cost-quote-slot [data-cost]')"
                           "?.textContent !== before", arg=before)
    shots(page, "2-desktop-detailed-picked", full_page=False)

    page.fill("#create-form [name=prompt]", "a red circle")
    page.click("#create-form button[type=submit]")
    page.wait_for_selector("[data-job-panel]")
    with orm():
        job = Job.objects.get(user=user)
        assert (job.model.name, job.steps, job.sampler) == ("detailed", 7, "ddim")
    page.wait_for_selector("[data-job-panel] [data-result-image]", timeout=60_000)
    with orm():
        assert Job.objects.get(pk=job.pk).state == JobState.SUCCEEDED

    page.goto("/create/")  # remembered
    assert page.locator("#create-form select[name=model]").input_value() == "detailed"
    assert form_value(page, "steps") == "7"
    assert session.console_errors == []


def test_the_picker_fits_a_phone(signed_in, shots, two_models):
    session, page, _user = signed_in(viewport=PHONE)
    page.goto("/create/")
    page.locator("#create-form select[name=model]").select_option("detailed")
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    shots(page, "phone-detailed-picked", full_page=False)
    assert session.console_errors == []
