"""Several models in one studio (docs/models.md, "Several models"): the registry, Create's
picker, prices, a worker limited to some models, a model that fails to load. Real database,
real engine on copies of the tiny test model."""

from __future__ import annotations

import dataclasses
import re
import shutil
from decimal import Decimal

import pytest
import torch
from django.urls import reverse

from billing.selectors import wallet_balance
from generation import selectors, services, worker
from generation.models import Job, JobState, SDModel
from generation.selectors import model_path
from tests.factories import job_params, make_user, submit_job

pytestmark = [pytest.mark.django_db]


@pytest.fixture(autouse=True)
def _one_thread(settings):
    torch.set_num_threads(1)
    settings.STUDIO_TORCH_THREADS = 1


@pytest.fixture
def second_model(tmp_path):
    """A second registered model: a copy of the test model under another name and defaults."""
    folder = tmp_path / "second-model"
    shutil.copytree(model_path(), folder)
    services.builtin_model()
    return services.model_register(name="second", title="Second model", path=str(folder), description="A copy",
                                   default_steps=3, default_guidance_scale=2.5, default_sampler="ddim",
                                   price_multiplier=Decimal("2"))


def run_next(worker_id="test-worker", models=()):
    lease = services.job_claim_next(worker_id=worker_id, models=models)
    if lease is not None:
        worker.run_job(lease)
    return lease


# -- The registry -------------------------------------------------------------------------------

@pytest.mark.database
def test_the_studios_own_model_registers_itself_as_the_default_with_the_first_job():
    assert not SDModel.objects.exists()
    job = submit_job(make_user(credits=50))
    model = SDModel.objects.get()
    assert (job.model, job.model_name, job.model_hash) == (model, model.name, model.hash)
    assert model.is_default and model.path == str(model_path()) and model.family and len(model.hash) == 10


def test_registering_reads_the_file_and_refuses_what_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "model.ckpt").write_bytes(b"\x80\x02pickle")
    for path in (tmp_path / "missing", tmp_path / "notes.txt", tmp_path / "model.ckpt"):
        with pytest.raises(services.ModelNotUsable):
            services.model_register(name="bad", title="Bad", path=str(path))
    with pytest.raises(services.ModelNotUsable, match="not a model name"):
        services.model_register(name="no spaces", title="x", path=str(model_path()))
    assert not SDModel.objects.exists()


def test_a_model_has_its_own_defaults_and_price(second_model):
    info = second_model.model_info()
    assert (info.default_steps, info.default_guidance_scale, info.default_sampler) == (3, 2.5, "ddim")
    user = make_user(credits=100)
    big = {"width": 512, "height": 512, "steps": 30}  # 4 credits at the default prices: no rounding up
    plain = submit_job(user, **big)
    doubled = services.job_submit(user=user, **job_params(**big), model=second_model)
    assert (plain.cost, doubled.cost) == (4, 8) and doubled.model == second_model


def test_a_disabled_or_broken_model_takes_no_job_and_costs_nothing(second_model):
    user = make_user(credits=100)
    services.model_update(model=second_model, enabled=False)
    with pytest.raises(services.ModelNotUsable, match="no longer offered"):
        services.job_submit(user=user, **job_params(), model=second_model)
    services.model_update(model=second_model, enabled=True)
    services.model_mark_broken(model_id=second_model.pk, reason="file gone")
    with pytest.raises(services.ModelNotUsable, match="could not load it"):
        services.job_submit(user=user, **job_params(), model=second_model)
    assert wallet_balance(user=user)[0] == 100 and not Job.objects.exists()
    assert second_model not in selectors.models_offered()


@pytest.mark.database
def test_marking_a_model_broken_fails_its_queued_jobs_and_releases_their_credits(second_model):
    user = make_user(credits=100)
    other = submit_job(user)
    stuck = [services.job_submit(user=user, **job_params(), model=second_model) for _ in range(2)]
    assert services.model_mark_broken(model_id=second_model.pk, reason="The model second could not be loaded") == 2
    for job in stuck:
        job.refresh_from_db()
        assert job.state == JobState.FAILED and "could not be loaded" in job.error
    other.refresh_from_db()
    assert other.state == JobState.QUEUED
    assert wallet_balance(user=user)[0] == 100 - other.cost


# -- Which worker runs a job --------------------------------------------------------------------

@pytest.mark.database
def test_a_worker_limited_to_one_model_never_claims_another_models_jobs(second_model):
    user = make_user(credits=100)
    default_job = submit_job(user)
    second_job = services.job_submit(user=user, **job_params(), model=second_model)
    lease = services.job_claim_next(worker_id="only-second", models=["second"])
    assert lease.job_id == second_job.pk
    assert services.job_claim_next(worker_id="only-second", models=["second"]) is None  # never the other one
    assert services.job_claim_next(worker_id="any", models=()).job_id == default_job.pk


# The worker's lease keeper renews from its own connection while a model loads: these tests commit.
@pytest.mark.django_db(transaction=True)
def test_a_worker_runs_each_job_on_its_model_and_keeps_both_warm(second_model, settings):
    user = make_user(credits=100)
    first = submit_job(user, steps=2, seed=3)
    second = services.job_submit(user=user, **job_params(steps=2, seed=3), model=second_model)
    run_next()
    run_next()
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.state, second.state) == (JobState.SUCCEEDED, JobState.SUCCEEDED), (first.error, second.error)
    assert second_model.path in worker.engine_pool().paths()
    assert "Model hash: " in second.images.get().infotext


@pytest.mark.database
@pytest.mark.django_db(transaction=True)
def test_a_model_that_fails_to_load_fails_its_job_with_credits_back_and_the_worker_goes_on(tmp_path):
    broken_folder = tmp_path / "broken"
    shutil.copytree(model_path(), broken_folder)
    services.builtin_model()
    broken = services.model_register(name="broken", title="Broken", path=str(broken_folder))
    for weights in (broken_folder / "unet").glob("*.safetensors"):
        weights.write_bytes(b"truncated")  # replaced by a bad copy after it was registered
    user = make_user(credits=100)
    doomed = services.job_submit(user=user, **job_params(steps=2), model=broken)
    waiting = services.job_submit(user=user, **job_params(steps=2), model=broken)
    fine = submit_job(user, steps=2)
    run_next()  # the broken model's first job: fails, and fails the other one too
    doomed.refresh_from_db()
    waiting.refresh_from_db()
    broken.refresh_from_db()
    assert doomed.state == JobState.FAILED and doomed.error.startswith("The model broken could not be loaded: ")
    assert waiting.state == JobState.FAILED
    assert broken.is_broken and broken.broken_reason == doomed.error
    run_next()
    fine.refresh_from_db()
    assert fine.state == JobState.SUCCEEDED
    assert wallet_balance(user=user)[0] == 100 - fine.cost


# -- Create, the quote, the staff pages -----------------------------------------------------------

def test_create_offers_the_models_and_remembers_the_last_one_picked(client, second_model):
    user = make_user(credits=100)
    client.force_login(user)
    page = client.get(reverse("generation:create")).content.decode()
    assert 'name="model"' in page and ">Second model</option>" in page
    second = re.search(r'<option value="second"[^>]*>', page).group(0)
    assert 'data-steps="3" data-guidance="2.5"' in second and 'data-sampler="ddim"' in second
    response = client.post(reverse("generation:create"), {
        "model": "second", "prompt": "a red circle", "aspect": "1:1", "steps": 3, "guidance_scale": 2.5,
        "sampler": "ddim", "num_images": 1})
    assert response.status_code == 302, response.content.decode()[:2000]
    job = Job.objects.get()
    assert job.model == second_model and job.model_name == "second"
    page = client.get(reverse("generation:create")).content.decode()
    assert re.search(r'<option value="second"[^>]*selected>Second model</option>', page)
    assert 'name="steps" value="3"' in page  # the picked model's defaults


def test_create_refuses_a_model_that_is_not_offered_with_a_clear_error(client, second_model):
    user = make_user(credits=100)
    client.force_login(user)
    services.model_update(model=second_model, enabled=False)
    response = client.post(reverse("generation:create"), {
        "model": "second", "prompt": "a red circle", "aspect": "1:1", "steps": 3, "guidance_scale": 2.5,
        "sampler": "ddim", "num_images": 1})
    assert response.status_code == 400
    assert "That model is not offered (any more); choose another." in response.content.decode()
    assert not Job.objects.exists() and wallet_balance(user=user)[0] == 100


def test_the_quote_prices_the_picked_model(client, second_model):
    client.force_login(make_user(credits=100))
    params = {"aspect": "1:1", "steps": 20, "num_images": 1}
    plain = client.get(reverse("generation:quote"), params).context["cost"]
    doubled = client.get(reverse("generation:quote"), {**params, "model": "second"}).context["cost"]
    assert doubled == 2 * plain
    assert client.get(reverse("generation:quote"), {**params, "model": "nope"}).context["cost"] is None


def test_staff_register_change_and_repair_models(client, tmp_path):
    folder = tmp_path / "staff-model"
    shutil.copytree(model_path(), folder)
    client.force_login(make_user(staff=True))
    assert client.get(reverse("generation:staff_models")).status_code == 200
    bad = client.post(reverse("generation:staff_model_register"), {
        "name": "staff", "path": str(tmp_path / "nothing-here"), "price_multiplier": "1", "enabled": "on"})
    assert bad.status_code == 400 and "nothing-here" in bad.content.decode()
    ok = client.post(reverse("generation:staff_model_register"), {
        "name": "staff", "title": "Staff's", "path": str(folder), "price_multiplier": "1.5", "enabled": "on",
        "default_steps": "12"})
    assert ok.status_code == 302
    model = SDModel.objects.get(name="staff")
    assert model.model_info().default_steps == 12 and model.family
    listing = client.get(reverse("generation:staff_models")).content.decode()
    assert "Staff&#x27;s" in listing and "1.5" in listing
    services.model_mark_broken(model_id=model.pk, reason="could not be loaded: gone")
    assert "data-broken" in client.get(reverse("generation:staff_models")).content.decode()
    assert client.post(reverse("generation:staff_model_repair", args=[model.pk])).status_code == 302
    model.refresh_from_db()
    assert not model.is_broken


def test_the_model_pages_are_staff_only(client):
    client.force_login(make_user())
    assert client.get(reverse("generation:staff_models")).status_code == 302  # to the admin login
    assert client.post(reverse("generation:staff_model_register"), {"name": "x", "path": "/"}).status_code == 302
    assert not SDModel.objects.exists()


def test_reusing_a_job_or_a_pngs_settings_picks_its_model(client, second_model):
    from tests.generation import upload_corpus as corpus
    from tests.generation.test_png_info import fields_json, post

    user = make_user(credits=100)
    client.force_login(user)
    job = services.job_submit(user=user, **job_params(steps=5), model=second_model)
    page = client.get(f"{reverse('generation:create')}?from={job.pk}").content.decode()
    assert re.search(r'<option value="second"[^>]*selected>', page) and 'name="steps" value="5"' in page

    parameters = "a red circle\nSteps: 6, Sampler: Euler, CFG scale: 3, Seed: 1, Size: 64x64, Model: second"
    fields = fields_json(post(client, corpus.png_with_text(parameters=parameters)))
    assert (fields["model"], fields["steps"]) == ("second", 6)
    elsewhere = parameters.replace("Model: second", "Model hash: 0123456789, Model: elsewhere")
    response = post(client, corpus.png_with_text(parameters=elsewhere))
    assert "model" not in fields_json(response) and "elsewhere (0123456789)" in response.content.decode()


def test_create_sizes_an_sdxl_model_by_its_aspect_buckets():
    from generation.engine.contracts import ModelInfo
    from generation.forms import size_for_aspect

    sdxl = ModelInfo(name="xl", hash="0" * 10, family="sdxl", native_width=1024, native_height=1024, max_width=2048,
                     max_height=2048, vae_scale_factor=8)
    assert [size_for_aspect(aspect, sdxl) for aspect in ("1:1", "3:2", "2:3", "16:9", "9:16")] == [
        (1024, 1024), (1216, 832), (832, 1216), (1344, 768), (768, 1344)]
    tiny = dataclasses.replace(sdxl, native_width=64, native_height=64, max_width=128, max_height=128)
    assert size_for_aspect("16:9", tiny) == (80, 48)  # the buckets scaled to a tiny model's 64 px
    sd15 = dataclasses.replace(sdxl, family="sd1", native_width=512, native_height=512)
    assert size_for_aspect("16:9", sd15) == (912, 512)  # others: the short side native, as before


def test_a_training_pause_runs_only_the_models_of_a_limited_worker(second_model, settings, monkeypatch):
    """In a training's pause points a worker runs waiting generation jobs: only its models' ones."""
    settings.STUDIO_WORKER_MODELS = ["second"]
    user = make_user(credits=100)
    other_model_job = submit_job(user)
    own_model_job = services.job_submit(user=user, **job_params(), model=second_model)
    ran = []
    monkeypatch.setattr(worker, "run_job", lambda lease, keep_alive=None: ran.append(lease.job_id))
    reporter = worker.TrainingReporter(services.Lease(job_id=None, worker_id="w", attempt=1), total_steps=10,
                                       resumed_at=0, run_generation=True)
    monkeypatch.setattr(reporter, "keep_alive", lambda: None)
    reporter.pause_point()
    assert ran == [own_model_job.pk] and Job.objects.get(pk=other_model_job.pk).state == JobState.QUEUED


def test_a_worker_the_broadcast_missed_asks_for_a_new_models_queue_at_its_next_task(second_model, monkeypatch):
    """A model registered against another broker (no broadcast reached the worker): the worker's
    next task asks its own consumer for the model's queue, once."""
    from celery import current_app

    from generation import tasks

    asked = []
    monkeypatch.setattr(current_app.control, "add_consumer", lambda queue, destination: asked.append((queue, destination)))
    monkeypatch.setattr(tasks, "model_queues_asked", {services.builtin_model().queue})
    assert tasks.ask_for_missing_model_queues("worker1@host") == ["gpu.second"]
    assert asked == [("gpu.second", ["worker1@host"])]
    assert tasks.ask_for_missing_model_queues("worker1@host") == []  # asked once
    assert tasks.ask_for_missing_model_queues(None) == []  # never a broadcast to every worker


def test_trainings_start_from_the_studios_own_model_whichever_model_is_the_default(second_model):
    from tests.generation.test_training_services import submit as submit_training

    SDModel.objects.filter(pk=second_model.pk).update(info={**second_model.info, "name": "other", "hash": "0" * 10})
    services.model_make_default(model=second_model)
    assert selectors.model_info().name == "other"  # what Create starts with
    training = submit_training(make_user(credits=500))
    own = services.builtin_model()
    assert (training.model_name, training.model_hash) == (own.model_info().name, own.hash)
    assert services.training_spec(training).base_model_path == str(model_path())
