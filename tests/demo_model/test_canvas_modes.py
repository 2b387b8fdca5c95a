"""The canvas modes of the Engine on the shipped studio-tiny model: inpaint (original, fill,
latent noise, only masked), image to image, outpainting, a 9-channel inpainting UNet, and the
checks on sources and masks. The judge reads the results (docs/demo-model.md)."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from generation.engine import GenerationRequest, InvalidRequest
from generation.engine.inpainting import outpaint_canvas
from generation.engine.training import dataset, judge
from generation.engine.training.dataset import Obj, Scene

BOX = (36, 36, 92, 92)  # the masked square, inside a 128x128 picture
RED_CIRCLE = "a red circle in the centre on a blue background"


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def decoded(generated) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(generated.png)).convert("RGB"), dtype=np.float32)


@pytest.fixture(scope="module")
def engine(weights_path):
    from generation.engine import Engine

    return Engine(weights_path, device="cpu")


@pytest.fixture(scope="module")
def source() -> Image.Image:
    """A blue background with a green square in the top left, drawn by the training renderer."""
    return dataset.render(Scene((Obj("square", "green", "small", "top left", 24, 24),), "blue"))


@pytest.fixture(scope="module")
def square_mask() -> Image.Image:
    mask = Image.new("L", (128, 128), 0)
    mask.paste(255, BOX)
    return mask


def inpaint_request(source, mask_image, **fields) -> GenerationRequest:
    base = dict(prompt=RED_CIRCLE, width=source.width, height=source.height, steps=20, guidance_scale=3.0,
                sampler="euler", seed=0, num_images=4, mode="inpaint", init_image=png(source),
                mask=png(mask_image), strength=1.0, mask_blur=4)
    return GenerationRequest(**{**base, **fields})


def outside(mask: Image.Image, blur: int) -> np.ndarray:
    """Pixels beyond the mask and its blur (a Gaussian's reach: 3 sigma)."""
    grown = np.asarray(mask) > 0
    reach = 3 * blur + 1
    ys, xs = np.nonzero(grown)
    far = np.ones(grown.shape, bool)
    far[max(ys.min() - reach, 0) : ys.max() + reach + 1, max(xs.min() - reach, 0) : xs.max() + reach + 1] = False
    return far


@pytest.mark.parametrize("masked_content", ["original", "fill", "latent_noise"])
def test_inpaint_paints_the_prompt_inside_and_keeps_every_pixel_outside(engine, source, square_mask, masked_content):
    strength = 0.9 if masked_content == "original" else 1.0
    result = engine.generate(inpaint_request(source, square_mask, masked_content=masked_content, strength=strength))
    original = np.asarray(source, dtype=np.float32)
    far = outside(square_mask, 4)
    found = 0
    for image in result.images:
        pixels = decoded(image)
        assert pixels.shape == original.shape
        assert np.array_equal(pixels[far], original[far]), "a pixel outside the mask changed"
        red = judge.judge(Image.fromarray(pixels.astype(np.uint8))).find("red")
        found += bool(red and red.position == "centre")
    assert found >= 3, f"the red circle appeared in {found} of 4 seeds"
    assert "Mask blur: 4" in result.images[0].infotext
    assert f"Denoising strength: {strength}" in result.images[0].infotext


def test_inpainted_background_matches_its_surroundings_at_the_edge(engine, source, square_mask):
    """The colour just inside the mask's edge, where only background is drawn, is the colour just
    outside it (the demo model once came out darker inside; now the blurred composite blends it)."""
    result = engine.generate(inpaint_request(source, square_mask, prompt="a blue background", num_images=4))
    left, top, right, bottom = BOX
    differences = []
    for image in result.images:
        pixels = decoded(image)
        inside = pixels[top + 2 : bottom - 2, left + 2 : left + 6].reshape(-1, 3).mean(0)
        beyond = pixels[top + 2 : bottom - 2, left - 14 : left - 10].reshape(-1, 3).mean(0)
        differences.append(np.abs(inside - beyond).max())
    assert np.mean(differences) < 8, differences


def test_only_masked_generates_a_crop_at_native_size_and_pastes_it_back(engine, square_mask):
    big = dataset.render(Scene((), "blue")).resize((256, 256), Image.Resampling.NEAREST)
    mask = Image.new("L", (256, 256), 0)
    mask.paste(255, (150, 150, 200, 200))
    request = inpaint_request(big, mask, width=128, height=128, only_masked=True, only_masked_padding=32)
    result = engine.generate(request)
    original = np.asarray(big, dtype=np.float32)
    far = outside(mask, 4)
    reds = 0
    for image in result.images:
        pixels = decoded(image)
        assert (image.width, image.height) == (256, 256)
        assert np.array_equal(pixels[far], original[far])
        region = pixels[150:200, 150:200]
        reds += bool(((region[..., 0] > 150) & (region[..., 2] < 120)).mean() > 0.2)
    assert reds >= 3, f"red inside the crop in {reds} of 4 seeds"
    assert "Inpaint area: Only masked" in result.images[0].infotext


def test_image_to_image_follows_the_source_at_low_strength_and_the_prompt_at_high(engine, source):
    def run(strength):
        return engine.generate(GenerationRequest(
            prompt="a large yellow circle in the centre on a red background", width=128, height=128, steps=20,
            guidance_scale=3.0, sampler="euler", seed=1, num_images=1, mode="img2img", init_image=png(source),
            strength=strength)).images[0]

    original = np.asarray(source, dtype=np.float32)
    gentle = decoded(run(0.2))
    assert np.abs(gentle - original).mean() < 12
    assert judge.judge(Image.fromarray(gentle.astype(np.uint8))).background == "blue"
    strong = judge.judge(Image.open(io.BytesIO(run(1.0).png)))
    assert strong.background == "red", strong


def test_outpainting_continues_the_background(engine, source):
    canvas, mask = outpaint_canvas(source, left=0, top=0, right=64, bottom=0)
    assert canvas.size == (192, 128)
    fill = np.asarray(canvas, dtype=np.float32)[:, 128:]
    assert np.abs(fill.reshape(-1, 3).mean(0) - np.asarray(source)[:, 100:].reshape(-1, 3).mean(0)).max() < 12
    request = inpaint_request(canvas, mask, prompt="a green square in the top left on a blue background",
                              masked_content="fill", num_images=2)
    for image in engine.generate(request).images:
        pixels = decoded(image)
        assert (image.width, image.height) == (192, 128)
        assert np.array_equal(pixels[:, :100], np.asarray(canvas, dtype=np.float32)[:, :100])
        new_area = Image.fromarray(pixels[:, 128:].astype(np.uint8)).resize((128, 128))
        assert judge.judge(new_area).background == "blue"


def test_inpaint_previews_show_the_whole_picture_with_the_source_outside(engine, source, square_mask):
    frames = []
    engine.generate(inpaint_request(source, square_mask, num_images=1, steps=6),
                    on_step=lambda update: frames.append(update.preview_png), preview_interval_s=0)
    last = np.asarray(Image.open(io.BytesIO(frames[-1])).convert("RGB"), dtype=np.float32)
    small = np.asarray(source.resize((last.shape[1], last.shape[0]), Image.Resampling.BILINEAR), dtype=np.float32)
    corner = (slice(0, last.shape[0] // 4), slice(0, last.shape[1] // 4))  # the green square, unmasked
    assert np.abs(last[corner] - small[corner]).mean() < 6


@pytest.mark.parametrize(("fields", "field"), [
    ({"mask": png(Image.new("L", (64, 64), 255))}, "mask"),
    ({"mask": png(Image.new("L", (128, 128), 0))}, "mask"),
    ({"init_image": b"GIF89a not really"}, "init_image"),
    ({"init_image": b"\x89PNG\r\n\x1a\n truncated"}, "init_image"),
    ({"strength": 0.01}, "strength"),
    ({"width": 64, "height": 64}, "init_image"),
])
def test_bad_sources_and_masks_are_refused_with_the_field(engine, source, square_mask, fields, field):
    with pytest.raises(InvalidRequest) as error:
        engine.generate(inpaint_request(source, square_mask, masked_content="original", **fields))
    assert error.value.field == field


def test_an_opaque_rgba_mask_is_read_by_its_colours(engine, source, square_mask):
    """A browser canvas exports RGBA with alpha 255 everywhere: its alpha says nothing."""
    rgba = square_mask.convert("RGBA")
    result = engine.generate(inpaint_request(source, square_mask, num_images=1, steps=4, mask=png(rgba)))
    far = outside(square_mask, 4)
    assert np.array_equal(decoded(result.images[0])[far], np.asarray(source, dtype=np.float32)[far])


def test_a_decompression_bomb_is_refused(engine, square_mask, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 128 * 128 // 4)
    with pytest.raises(InvalidRequest) as error:
        engine.generate(inpaint_request(Image.new("RGB", (128, 128)), square_mask))
    assert error.value.field == "init_image"


@pytest.fixture(scope="module")
def inpainting_model(weights_path, tmp_path_factory):
    """studio-tiny turned into a 9-channel inpainting model the way SD's inpainting checkpoint
    began: the UNet's first convolution widened with zero weights for the mask and masked image."""
    path = tmp_path_factory.mktemp("models") / "studio-tiny-inpainting"
    shutil.copytree(weights_path, path)
    config_path = path / "unet" / "config.json"
    config = json.loads(config_path.read_text())
    config["in_channels"] = 9
    config_path.write_text(json.dumps(config))
    weights_file = path / "unet" / "diffusion_pytorch_model.safetensors"
    weights = load_file(weights_file)
    conv = weights["conv_in.weight"]
    weights["conv_in.weight"] = torch.cat([conv, torch.zeros(conv.shape[0], 5, *conv.shape[2:])], dim=1)
    save_file(weights, weights_file)
    return path


def test_a_nine_channel_inpainting_unet_inpaints_and_generates(inpainting_model, source, square_mask):
    from generation.engine import Engine

    engine = Engine(inpainting_model, device="cpu")
    assert engine.inpainting_model
    result = engine.generate(inpaint_request(source, square_mask, num_images=2))
    far = outside(square_mask, 4)
    for image in result.images:
        assert np.array_equal(decoded(image)[far], np.asarray(source, dtype=np.float32)[far])
    free = engine.generate(GenerationRequest(prompt="a red circle", width=128, height=128, steps=20,
                                             guidance_scale=5.0, sampler="euler", seed=1))
    assert judge.judge(Image.open(io.BytesIO(free.images[0].png))).objects[0].colour == "red"
