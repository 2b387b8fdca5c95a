"""Engine.generate_batch: several users' compatible requests as one batch on the UNet, each with its
own prompt, seeds, previews, steps and cancel; a batched request's images equal the same request
run alone.

Tolerance (CPU, float32, one torch thread): a batched image may differ from the same request run
alone by at most 1 level of 255 in a pixel channel (the UNet's batched convolutions round
differently); measured on the demo model over all six samplers, 128x128, 4 steps: max 1, mean
<= 0.0002 levels. The seeds, sizes and PNG parameters are identical. The same holds for the
requests that stay when another one's rows leave the batch mid-run.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from PIL import Image

from generation.engine import SAMPLERS, GenerationRequest, InvalidRequest
from generation.engine.contracts import LoraRef
from generation.engine.engine import batch_key
from generation.engine.previews import frame_distance

MAX_LEVELS = 1  # per pixel channel, of 255


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def assert_same_images(batched, alone):
    assert not batched.interrupted and not alone.interrupted
    assert [im.seed for im in batched.images] == [im.seed for im in alone.images]
    assert [im.infotext for im in batched.images] == [im.infotext for im in alone.images]
    for a, b in zip(batched.images, alone.images, strict=True):
        assert (a.width, a.height) == (b.width, b.height)
        diff = np.abs(pixels(a.png) - pixels(b.png))
        assert diff.max() <= MAX_LEVELS, diff.max()


@pytest.fixture
def requests_of_three_users(small_request):
    """Three users' compatible requests: own prompts, negative prompts, seeds, image counts."""
    return [
        dataclasses.replace(small_request, prompt="a photo of a cat", seed=1),
        dataclasses.replace(small_request, prompt="a red circle", negative_prompt="blue", seed=7, num_images=2),
        dataclasses.replace(small_request, prompt="a dog on grass", seed=100),
    ]


@pytest.mark.parametrize("sampler", ["euler_a", "dpmpp_2m"])
def test_each_batched_request_equals_the_same_request_run_alone(engine, requests_of_three_users, sampler):
    requests = [dataclasses.replace(r, sampler=sampler) for r in requests_of_three_users]
    batched = engine.generate_batch(requests)
    assert len(batched) == 3
    assert [len(r.images) for r in batched] == [1, 2, 1]
    assert [im.seed for im in batched[1].images] == [7, 8]
    for request, result in zip(requests, batched, strict=True):
        assert_same_images(result, engine.generate(request))
        assert result.engine_seconds > 0
    assert "Negative prompt: blue" in batched[1].images[0].infotext
    assert "Negative prompt" not in batched[0].images[0].infotext
    # each request its own picture
    assert np.abs(pixels(batched[0].images[0].png) - pixels(batched[2].images[0].png)).mean() > 5


def test_each_request_gets_its_own_steps_and_preview_frames(engine, requests_of_three_users):
    updates = [[], [], []]
    batched = engine.generate_batch(requests_of_three_users, on_step=[u.append for u in updates],
                                    preview_interval_s=0.0)
    for own in updates:
        assert [u.step for u in own] == [1, 2, 3, 4]
        assert all(u.total_steps == 4 and u.preview_png for u in own)
    one = Image.open(io.BytesIO(updates[0][-1].preview_png))
    two = Image.open(io.BytesIO(updates[1][-1].preview_png))
    assert two.width == 2 * one.width and two.height == one.height  # its two images side by side
    # The last frame of each request previews its own image, not a neighbour's.
    own = frame_distance(updates[0][-1].preview_png, batched[0].images[0].png)
    neighbour = frame_distance(updates[2][-1].preview_png, batched[0].images[0].png)
    assert own < neighbour
    # and it is the frame the request gets when it runs alone
    alone = []
    engine.generate(requests_of_three_users[2], on_step=alone.append, preview_interval_s=0.0)
    assert frame_distance(updates[2][-1].preview_png, alone[-1].preview_png) < 1.0


def test_a_request_cancelled_mid_batch_leaves_it_and_the_others_finish_as_alone(engine, requests_of_three_users):
    requests = [dataclasses.replace(r, steps=6) for r in requests_of_three_users]
    updates = [[], [], []]
    batched = engine.generate_batch(
        requests, on_step=[u.append for u in updates],
        should_cancel=[None, lambda: len(updates[1]) >= 2, lambda: False],
    )
    assert batched[1].interrupted and batched[1].images == []
    assert [u.step for u in updates[1]] == [1, 2]  # no update after its cancel
    assert [u.step for u in updates[0]] == [1, 2, 3, 4, 5, 6] == [u.step for u in updates[2]]
    last = updates[2][-1].preview_png
    assert frame_distance(last, batched[2].images[0].png) < frame_distance(last, batched[0].images[0].png)
    assert_same_images(batched[0], engine.generate(requests[0]))
    assert_same_images(batched[2], engine.generate(requests[2]))
    assert batched[1].engine_seconds <= batched[0].engine_seconds


def test_a_request_cancelled_before_the_start_is_left_out(engine, requests_of_three_users):
    updates = [[], [], []]
    batched = engine.generate_batch(requests_of_three_users, on_step=[u.append for u in updates],
                                    should_cancel=[lambda: True, None, None])
    assert batched[0].interrupted and batched[0].images == [] and updates[0] == []
    assert_same_images(batched[1], engine.generate(requests_of_three_users[1]))
    assert len(batched[2].images) == 1


def test_the_run_stops_when_every_request_is_cancelled(engine, requests_of_three_users):
    requests = [dataclasses.replace(r, steps=10) for r in requests_of_three_users]
    updates = [[], [], []]
    batched = engine.generate_batch(requests, on_step=[u.append for u in updates],
                                    should_cancel=[lambda k=k: len(updates[k]) >= 2 + k for k in range(3)])
    assert all(result.interrupted and result.images == [] for result in batched)
    assert [len(u) for u in updates] == [2, 3, 4]  # no step ran after the last cancel
    assert len(engine.generate(requests[0]).images) == 1  # usable afterwards


def test_incompatible_requests_are_refused_before_any_work(engine, small_request):
    for change in ({"width": 64}, {"steps": 3}, {"sampler": "ddim"}, {"guidance_scale": 5.0}):
        with pytest.raises(InvalidRequest) as error:
            engine.generate_batch([small_request, dataclasses.replace(small_request, **change)])
        assert error.value.field == "batch"
    with pytest.raises(ValueError, match="2 hooks for 1 requests"):
        engine.generate_batch([small_request], on_step=[None, None])
    assert engine.generate_batch([]) == []


def test_batch_key_is_what_a_batch_shares():
    base = GenerationRequest(prompt="a", width=128, height=128, steps=4, seed=1)
    lora = LoraRef(name="x", sha256="ab" * 32, path="/x.safetensors", weight=0.8)
    assert batch_key(base) == batch_key(dataclasses.replace(base, prompt="b", negative_prompt="c", seed=9,
                                                             num_images=3))
    assert batch_key(base) != batch_key(dataclasses.replace(base, loras=(lora,)))
    assert batch_key(dataclasses.replace(base, loras=(lora,))) != batch_key(
        dataclasses.replace(base, loras=(dataclasses.replace(lora, weight=0.9),)))
    assert batch_key(dataclasses.replace(base, loras=(lora,))) == batch_key(
        dataclasses.replace(base, loras=(dataclasses.replace(lora, name="renamed", path="/y"),)))
    assert batch_key(base) != batch_key(dataclasses.replace(base, mode="img2img"))


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_a_cancelled_requests_rows_leave_the_unet_and_the_others_stay_as_alone(engine, requests_of_three_users,
                                                                                 sampler):
    requests = [dataclasses.replace(r, steps=5, sampler=sampler) for r in requests_of_three_users]
    rows = []
    hook = engine.pipe.unet.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    updates = [[], [], []]
    try:
        batched = engine.generate_batch(
            requests, on_step=[u.append for u in updates],
            should_cancel=[None, lambda: len(updates[1]) >= 2, lambda: False], preview_interval_s=0.0,
        )
    finally:
        hook.remove()
    assert rows == [8, 8, 4, 4, 4]  # (1 + 2 + 1 images) x 2 for guidance, then without its 2 images
    assert batched[1].interrupted and [u.step for u in updates[1]] == [1, 2]
    assert [u.step for u in updates[2]] == [1, 2, 3, 4, 5]
    assert all(u.preview_png for u in updates[2])  # its own frame, from its rows, after the cut too
    assert Image.open(io.BytesIO(updates[2][-1].preview_png)).size == Image.open(
        io.BytesIO(updates[2][0].preview_png)).size
    last = updates[2][-1].preview_png
    assert frame_distance(last, batched[2].images[0].png) < frame_distance(last, batched[0].images[0].png)
    assert_same_images(batched[0], engine.generate(requests[0]))
    assert_same_images(batched[2], engine.generate(requests[2]))


def test_on_an_inpainting_model_a_batch_runs_one_request_after_another(engine, requests_of_three_users,
                                                                         monkeypatch):
    # Text to image on a 9-channel model is inpainting a grey canvas: not batched, each as alone.
    # (The demo model's 4-channel UNet stands in: diffusers' inpaint pipeline runs either.)
    monkeypatch.setattr(engine, "inpainting_model", True)
    rows = []
    hook = engine.pipe.unet.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    updates = [[], [], []]
    try:
        batched = engine.generate_batch(requests_of_three_users, on_step=[u.append for u in updates],
                                        should_cancel=[None, lambda: True, None])
        alone = engine.generate(requests_of_three_users[2])
    finally:
        hook.remove()
    assert set(rows) == {2}  # one image at a time (x2 for guidance), never the batch
    assert batched[1].interrupted and updates[1] == []
    assert [u.step for u in updates[0]] == [1, 2, 3, 4]
    assert batched[2].images[0].png == alone.images[0].png


def test_a_batch_the_memory_cannot_hold_runs_in_halves_with_the_same_images(engine, requests_of_three_users,
                                                                              monkeypatch):
    """Memory bounds a batch too: out of memory (simulated: more than 2 images at once), the batch
    runs as halves, each request still equal to it alone."""
    import torch

    denoise = engine._denoise
    sizes = []

    def small_card(requests, *args, **kwargs):
        images = sum(request.num_images for request in requests)
        sizes.append(images)
        if images > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return denoise(requests, *args, **kwargs)

    monkeypatch.setattr(engine, "_denoise", small_card)
    batched = engine.generate_batch(requests_of_three_users)
    assert sizes == [4, 1, 3, 2, 1]  # 4 images: too many; then the first request, then the other two, then halves
    monkeypatch.undo()
    for request, result in zip(requests_of_three_users, batched, strict=True):
        assert_same_images(result, engine.generate(request))
