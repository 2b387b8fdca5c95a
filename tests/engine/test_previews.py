"""Preview frames: they converge to the final image (studio-tiny's trained decoder); the fitted
linear factors track the VAE decode (demo model); TAESD works when given."""

from __future__ import annotations

import dataclasses
import io
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from generation.engine.preview_fit import correlation, decode_small, project
from generation.engine.previews import frame_distance, grid

STUDIO_TINY = Path(__file__).resolve().parents[2] / "generation/engine/weights/studio-tiny"


@pytest.fixture(scope="module")
def studio_tiny(engine_device):
    from generation.engine import Engine

    return Engine(STUDIO_TINY, device=engine_device)


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m"])
def test_previews_converge_to_the_final_image(studio_tiny, sampler):
    """Watching it emerge runs forwards: frames come closer to the result as the steps go, and the
    last frame is close to it (distance per channel, 0-255, frame scaled up as the browser does)."""
    from generation.engine import GenerationRequest

    runs = []
    for prompt, seed in [("a red circle on a blue background", 1),
                         ("a green heart and a white square on a purple background", 2)]:
        updates = []
        request = GenerationRequest(prompt=prompt, width=128, height=128, steps=12, guidance_scale=3.0,
                                    sampler=sampler, seed=seed)
        result = studio_tiny.generate(request, on_step=updates.append, preview_interval_s=0.0)
        runs.append([frame_distance(u.preview_png, result.images[0].png) for u in updates])
    last = [run[-1] for run in runs]
    first_third = statistics.mean(d for run in runs for d in run[:4])
    last_third = statistics.mean(d for run in runs for d in run[-4:])
    assert max(last) < 20, runs
    assert last_third < 0.6 * first_third, runs


def test_previews_are_a_useful_size(studio_tiny, small_request):
    assert studio_tiny.preview_method == "decoder"
    updates = []
    studio_tiny.generate(dataclasses.replace(small_request, steps=2, num_images=2), on_step=updates.append)
    frame = Image.open(io.BytesIO(updates[-1].preview_png))
    assert frame.size == (128, 64)  # two 64x64 images side by side: half the 128x128 output


def test_fitted_factors_approximate_the_vae_decode(engine):
    """On latents the model makes (seeds and prompts the fit never saw), preview ~ decoded image."""
    pipe = engine.pipe
    latents = torch.cat([
        pipe(prompt, width=128, height=128, num_inference_steps=4, output_type="latent",
             generator=torch.Generator().manual_seed(10_000 + i)).images
        for i, prompt in enumerate(["a dragon over a lake", "pastel abstract", "old castle at night"])
    ])
    target = decode_small(pipe.vae, latents)
    preview = project(latents, engine.info.latent_rgb_factors, engine.info.latent_rgb_bias).cpu()
    assert preview.shape == target.shape == (3, 3, 16, 16)
    assert correlation(preview, target) > 0.6
    for c in range(3):  # each colour channel follows, not just the overall tint
        assert correlation(preview[:, c], target[:, c]) > 0.4
    # And it is far better than a preview that ignores the latents.
    assert torch.mean((preview - target) ** 2) < 0.5 * torch.mean((target - target.mean()) ** 2) + 1e-3


def test_last_preview_frame_looks_like_the_image(engine, small_request):
    updates = []
    result = engine.generate(dataclasses.replace(small_request, sampler="euler", steps=6),
                             on_step=updates.append)
    frame = np.asarray(Image.open(io.BytesIO(updates[-1].preview_png)).convert("RGB")).astype(float)
    image = Image.open(io.BytesIO(result.images[0].png)).convert("RGB")
    small = np.asarray(image.reduce(8)).astype(float)
    assert frame.shape == small.shape == (16, 16, 3)
    assert np.corrcoef(frame.ravel(), small.ravel())[0, 1] > 0.6


def test_grid_layout():
    frames = np.stack([np.full((2, 3, 3), i, dtype=np.uint8) for i in range(3)])
    out = grid(frames)
    assert out.shape == (4, 6, 3)
    assert out[0, 0, 0] == 0 and out[0, 3, 0] == 1 and out[2, 0, 0] == 2 and out[2, 3, 0] == 0
    assert grid(frames[:1]).shape == (2, 3, 3)


@pytest.fixture(scope="module")
def taesd_path(tmp_path_factory):
    """A randomly initialised AutoencoderTiny in the same layout as madebyollin/taesd."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    taesd = AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                            num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1))
    path = tmp_path_factory.mktemp("taesd")
    taesd.save_pretrained(path)
    return path


def test_taesd_previews(demo_model_path, taesd_path, small_request, engine_device):
    from generation.engine import Engine

    engine = Engine(demo_model_path, device=engine_device, taesd_path=str(taesd_path))
    assert engine.preview_method == "taesd"
    updates = []
    result = engine.generate(dataclasses.replace(small_request, steps=3), on_step=updates.append,
                             preview_interval_s=0.0)
    assert len(result.images) == 1
    assert all(u.preview_png for u in updates)
    assert Image.open(io.BytesIO(updates[-1].preview_png)).size == (128, 128)  # full size, <= 256


def test_preview_decoder_round_trip(tmp_path):
    from generation.engine.previews import PreviewDecoder

    torch.manual_seed(0)
    decoder = PreviewDecoder(hidden=8, layers=2, upscale=2).eval()
    decoder.save(tmp_path / "decoder.safetensors")
    loaded = PreviewDecoder.load(tmp_path / "decoder.safetensors")
    assert loaded.config == {"latent_channels": 4, "hidden": 8, "layers": 2, "upscale": 2}
    latents = torch.randn(1, 4, 5, 6)
    with torch.no_grad():
        assert loaded(latents).shape == (1, 3, 10, 12)
        assert torch.allclose(loaded(latents), decoder(latents), atol=1e-2)  # stored as float16
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="preview-decoder"):
        PreviewDecoder.load(tmp_path / "other.safetensors")
