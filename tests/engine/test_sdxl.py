"""SDXL in the engine, on a tiny random-weight SDXL built from the shipped config (shrunk): both text
encoders and their pooled embedding, size conditioning, batches equal to solo runs, a request
leaving a batch mid-run, previews with SDXL's latent factors, image to image and inpainting, and a
single-file SDXL checkpoint generating like its folder."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from PIL import Image

from generation.engine import Engine, GenerationRequest, checkpoints, clip_tokenizer
from generation.engine.model_info import SDXL_FACTORS
from tests.engine.test_batching import assert_same_images, pixels
from tests.engine.test_single_file import build_tiny_pipeline, save_single_file, write_tiny_configs

REQUEST = GenerationRequest(prompt="a red circle", negative_prompt="blurry", width=64, height=64, steps=3, seed=1,
                            sampler="euler")


@pytest.fixture(scope="module")
def sdxl_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sdxl")
    pipe = build_tiny_pipeline("sdxl", write_tiny_configs("sdxl", folder / "configs"), clip_tokenizer.tokenizer_folder())
    pipe.save_pretrained(folder / "model")
    return folder


@pytest.fixture(scope="module")
def sdxl(sdxl_folder) -> Engine:
    return Engine(sdxl_folder / "model", device="cpu")


def png_of(png: bytes) -> Image.Image:
    return Image.open(io.BytesIO(png))


def test_an_sdxl_model_generates_with_both_text_encoders_and_previews(sdxl):
    assert sdxl.sdxl and sdxl.info.family == "sdxl" and sdxl.preview_method == "linear"
    assert sdxl.info.latent_rgb_factors == SDXL_FACTORS
    updates = []
    result = sdxl.generate(dataclasses.replace(REQUEST, num_images=2), on_step=updates.append, preview_interval_s=0)
    assert [image.seed for image in result.images] == [1, 2]
    assert all(png_of(image.png).size == (64, 64) for image in result.images)
    assert [u.step for u in updates] == [1, 2, 3] and all(u.preview_png for u in updates)
    other_prompt = sdxl.generate(dataclasses.replace(REQUEST, prompt="a blue square"))
    assert other_prompt.images[0].png != result.images[0].png  # the prompt reaches the UNet
    wider = sdxl.generate(dataclasses.replace(REQUEST, width=96))
    assert png_of(wider.images[0].png).size == (96, 64)  # size conditioning follows the request


def test_sdxl_batches_equal_solo_runs_and_a_request_can_leave_mid_batch(sdxl):
    requests = [dataclasses.replace(REQUEST, steps=4, seed=3),
                dataclasses.replace(REQUEST, steps=4, prompt="a green cross", negative_prompt="", seed=9, num_images=2),
                dataclasses.replace(REQUEST, steps=4, prompt="a white star", seed=20)]
    batched = sdxl.generate_batch(requests)
    for request, result in zip(requests, batched, strict=True):
        assert_same_images(result, sdxl.generate(request))
    steps = [[], [], []]
    leaving = sdxl.generate_batch(requests, on_step=[s.append for s in steps],
                                  should_cancel=[None, lambda: len(steps[1]) >= 2, None])
    assert leaving[1].interrupted and [u.step for u in steps[0]] == [1, 2, 3, 4]
    assert_same_images(leaving[0], batched[0])  # its pooled embeddings and size conditioning went with it
    assert_same_images(leaving[2], batched[2])


def test_sdxl_image_to_image_and_inpainting(sdxl):
    source = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 40, 40)).save(source, format="PNG")
    mask = io.BytesIO()
    picture = Image.new("L", (64, 64), 0)
    picture.paste(255, (16, 16, 48, 48))
    picture.save(mask, format="PNG")
    img2img = sdxl.generate(dataclasses.replace(REQUEST, mode="img2img", init_image=source.getvalue(), strength=0.5))
    inpaint = sdxl.generate(dataclasses.replace(REQUEST, mode="inpaint", init_image=source.getvalue(),
                                                mask=mask.getvalue(), strength=0.9))
    for result in (img2img, inpaint):
        assert png_of(result.images[0].png).size == (64, 64)
    corner = np.asarray(png_of(inpaint.images[0].png).convert("RGB"))[2, 2]
    assert abs(int(corner[0]) - 200) < 30  # outside the mask the source stays


def test_a_single_file_sdxl_generates_like_its_folder(sdxl_folder, sdxl, monkeypatch, tmp_path):
    from diffusers import StableDiffusionXLPipeline

    path = save_single_file(StableDiffusionXLPipeline.from_pretrained(sdxl_folder / "model"), "sdxl",
                            tmp_path / "tiny-xl.safetensors")
    shrunk = tmp_path / "configs"
    shrunk.mkdir()
    (shrunk / "sdxl").symlink_to(sdxl_folder / "configs")  # the engine reads the shipped configs; here, the tiny ones
    monkeypatch.setattr(checkpoints, "CONFIGS", shrunk)
    single = Engine(path, device="cpu")
    assert single.sdxl and single.info.name == "tiny-xl"
    from_file, from_folder = single.generate(REQUEST).images[0], sdxl.generate(REQUEST).images[0]
    assert np.abs(pixels(from_file.png) - pixels(from_folder.png)).max() <= 1  # the same weights



def test_an_sdxl_lora_is_refused_with_a_message_for_now(sdxl, tmp_path):
    import hashlib

    from generation.engine import InvalidRequest
    from generation.engine.contracts import LoraRef
    from tests.engine.test_lora import SDXL_KOHYA, kohya_keys

    data = kohya_keys(SDXL_KOHYA, alpha=4)
    path = tmp_path / "xl.safetensors"
    path.write_bytes(data)
    lora = LoraRef(name="xl", sha256=hashlib.sha256(data).hexdigest(), path=str(path), weight=1.0)
    with pytest.raises(InvalidRequest, match="does not fit the model") as refused:
        sdxl.generate(dataclasses.replace(REQUEST, loras=(lora,)))
    assert refused.value.field == "lora" and "lora_te2_" in refused.value.message
