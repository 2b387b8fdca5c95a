"""Preview frames: the fitted linear factors track the VAE decode; TAESD works when given."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch
from PIL import Image

from generation.engine.preview_fit import correlation, decode_small, project
from generation.engine.previews import grid


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
