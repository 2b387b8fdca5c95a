"""Engine.generate: determinism, seeds, samplers, step callbacks, previews, cancellation, PNG output."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from PIL import Image

from generation.engine import SAMPLERS, GenerationRequest, parse_infotext
from generation.engine.pngmeta import read_parameters


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def test_same_request_same_pixels(engine, small_request):
    a = engine.generate(small_request)
    b = engine.generate(small_request)
    assert not a.interrupted and len(a.images) == 1
    assert np.array_equal(pixels(a.images[0].png), pixels(b.images[0].png))
    assert a.images[0].png == b.images[0].png


def test_different_seed_different_pixels(engine, small_request):
    a = engine.generate(small_request)
    b = engine.generate(dataclasses.replace(small_request, seed=small_request.seed + 7))
    assert np.abs(pixels(a.images[0].png) - pixels(b.images[0].png)).mean() > 5


def test_batch_image_i_uses_seed_plus_i(engine, small_request):
    batch = engine.generate(dataclasses.replace(small_request, num_images=3))
    assert [im.seed for im in batch.images] == [42, 43, 44]
    for i, image in enumerate(batch.images):
        alone = engine.generate(dataclasses.replace(small_request, seed=42 + i))
        # Batched and single convolutions may round differently: the same image up to a few levels.
        diff = np.abs(pixels(image.png) - pixels(alone.images[0].png))
        assert diff.mean() < 1.0 and diff.max() <= 8
        assert f"Seed: {42 + i}," in image.infotext
    assert np.abs(pixels(batch.images[0].png) - pixels(batch.images[1].png)).mean() > 5


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_each_sampler_runs(engine, small_request, sampler):
    steps = []
    result = engine.generate(dataclasses.replace(small_request, sampler=sampler, width=64, height=96),
                             on_step=steps.append)
    image = result.images[0]
    assert (image.width, image.height) == (64, 96)
    assert Image.open(io.BytesIO(image.png)).size == (64, 96)
    assert f"Sampler: {SAMPLERS[sampler]}," in image.infotext
    assert [u.step for u in steps] == [1, 2, 3, 4]
    assert np.asarray(Image.open(io.BytesIO(image.png))).std() > 1  # not a blank image


def test_samplers_differ(engine, small_request):
    a = engine.generate(dataclasses.replace(small_request, sampler="euler"))
    b = engine.generate(dataclasses.replace(small_request, sampler="dpmpp_2m_karras"))
    assert not np.array_equal(pixels(a.images[0].png), pixels(b.images[0].png))


def test_on_step_every_step_with_differing_frames(engine, small_request):
    updates = []
    request = dataclasses.replace(small_request, steps=6)
    result = engine.generate(request, on_step=updates.append, preview_interval_s=0.0)
    assert not result.interrupted
    assert [u.step for u in updates] == [1, 2, 3, 4, 5, 6]
    assert all(u.total_steps == 6 for u in updates)
    frames = [u.preview_png for u in updates if u.preview_png is not None]
    assert len(frames) == 6
    assert len(set(frames)) >= 2
    for u in updates:
        assert u.preview_mime in ("image/webp", "image/png")
        preview = Image.open(io.BytesIO(u.preview_png))
        assert preview.size == (16, 16)  # 1/8 of 128x128: the linear latent preview
        assert preview.format.lower() == u.preview_mime.split("/")[1]
    first, last = (np.asarray(Image.open(io.BytesIO(f)).convert("RGB")).astype(int)
                   for f in (frames[0], frames[-1]))
    assert np.abs(first - last).mean() > 1


def test_preview_throttling_keeps_first_and_last_frames(engine, small_request):
    updates = []
    engine.generate(dataclasses.replace(small_request, steps=5), on_step=updates.append,
                    preview_interval_s=3600.0)
    assert [u.step for u in updates] == [1, 2, 3, 4, 5]
    with_frame = [u.step for u in updates if u.preview_png is not None]
    assert with_frame == [1, 5]
    assert all(u.preview_mime == "" for u in updates if u.preview_png is None)


def test_previews_off_still_reports_steps(engine, small_request):
    updates = []
    engine.generate(small_request, on_step=updates.append, previews=False)
    assert [u.step for u in updates] == [1, 2, 3, 4]
    assert all(u.preview_png is None and u.preview_mime == "" for u in updates)


def test_batch_preview_is_a_grid(engine, small_request):
    updates = []
    engine.generate(dataclasses.replace(small_request, num_images=4, steps=2), on_step=updates.append)
    assert Image.open(io.BytesIO(updates[-1].preview_png)).size == (32, 32)  # 2 x 2 frames of 16 px


def test_cancel_mid_run(engine, small_request):
    updates = []
    request = dataclasses.replace(small_request, steps=10)
    result = engine.generate(request, on_step=updates.append, should_cancel=lambda: len(updates) >= 3)
    assert result.interrupted
    assert result.images == []
    assert [u.step for u in updates] == [1, 2, 3]  # no step ran after the cancel
    # The engine is usable again afterwards.
    again = engine.generate(small_request)
    assert not again.interrupted and len(again.images) == 1


def test_cancel_before_start(engine, small_request):
    updates = []
    result = engine.generate(small_request, on_step=updates.append, should_cancel=lambda: True)
    assert result.interrupted and result.images == [] and updates == []


def test_on_step_exception_propagates(engine, small_request):
    def boom(update):
        raise RuntimeError("channel layer down")

    with pytest.raises(RuntimeError, match="channel layer down"):
        engine.generate(small_request, on_step=boom)
    assert len(engine.generate(small_request).images) == 1


def test_png_carries_a1111_parameters(engine, small_request):
    request = dataclasses.replace(small_request, negative_prompt="blurry, lowres", guidance_scale=5.5,
                                  sampler="dpmpp_2m")
    result = engine.generate(request)
    image = result.images[0]
    assert result.engine_seconds > 0
    assert image.png.startswith(b"\x89PNG\r\n\x1a\n")
    assert b"tEXtparameters\x00" in image.png
    assert read_parameters(image.png) == image.infotext
    info = engine.info
    assert image.infotext == (
        "a photo of a cat\n"
        "Negative prompt: blurry, lowres\n"
        f"Steps: 4, Sampler: DPM++ 2M, CFG scale: 5.5, Seed: 42, Size: 128x128, "
        f"Model hash: {info.hash}, Model: {info.name}"
    )
    parsed = parse_infotext(read_parameters(image.png))
    assert parsed["Prompt"] == "a photo of a cat" and parsed["Negative prompt"] == "blurry, lowres"


def test_non_latin_prompt_roundtrips_through_png(engine, small_request):
    request = dataclasses.replace(small_request, prompt="猫の写真, ünïcödé 🐱", steps=1)
    image = engine.generate(request).images[0]
    assert read_parameters(image.png) == image.infotext
    assert parse_infotext(image.infotext)["Prompt"] == "猫の写真, ünïcödé 🐱"


def test_invalid_request_raises_before_any_step(engine, small_request):
    from generation.engine import InvalidRequest

    updates = []
    with pytest.raises(InvalidRequest):
        engine.generate(dataclasses.replace(small_request, width=100), on_step=updates.append)
    assert updates == []


def test_native_size_runs(engine):
    result = engine.generate(GenerationRequest(prompt="a castle", steps=2))
    assert (result.images[0].width, result.images[0].height) == (512, 512)
